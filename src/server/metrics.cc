// GET /metrics: Prometheus text exposition (format 0.0.4). The OpenFaaS gateway's metric
// names first, so existing dashboards work, then faasvisor's own.
#include <cstdio>
#include <string>

#include "server/node_impl.h"
#include "util/clock.h"

namespace faasvisor {
namespace {

void family(std::string &out, const char *name, const char *type, const char *help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string &out, const char *name, const std::string &labels, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  out += name;
  out += '{';
  out += labels;
  out += "} ";
  out += buf;
  out += '\n';
}

std::string fn_label(const pool::Function &fn) { return "function_name=\"" + fn.name() + "\""; }

// A family with one sample per function.
template <typename Value>
void per_function(std::string &out, pool::Pool &pool, const char *name, const char *type,
                  const char *help, Value value) {
  family(out, name, type, help);
  pool.for_each_function([&](pool::Function &fn) {
    sample(out, name, fn_label(fn), static_cast<double>(value(fn)));
  });
}

// Async invocations (async/calls.h), per function and for the journal.
void append_async_metrics(std::string &out, NodeImpl &node) {
  const async::AsyncCalls &calls = *node.async;
  struct Family {
    const char *name, *type, *help;
    uint64_t (*value)(const async::FunctionCalls &);
  };
  static const Family kFamilies[] = {
      {"faasvisor_async_queue_depth", "gauge", "Async calls waiting to run.",
       [](const async::FunctionCalls &f) -> uint64_t { return f.waiting.size(); }},
      {"faasvisor_async_running", "gauge", "Async calls in the pool now.",
       [](const async::FunctionCalls &f) -> uint64_t { return f.running; }},
      {"faasvisor_async_live", "gauge", "Async calls accepted and not done (the faasvisor.async_queue limit counts these).",
       [](const async::FunctionCalls &f) -> uint64_t { return f.live; }},
      {"faasvisor_async_accepted_total", "counter", "Async calls accepted (202).",
       [](const async::FunctionCalls &f) { return f.accepted; }},
      {"faasvisor_async_completed_total", "counter", "Async calls done (called back, dropped, or without a callback).",
       [](const async::FunctionCalls &f) { return f.completed; }},
      {"faasvisor_async_refused_total", "counter", "Async calls refused with 429 (queue or memory limit).",
       [](const async::FunctionCalls &f) { return f.refused; }},
      {"faasvisor_async_callbacks_total", "counter", "Callback attempts made.",
       [](const async::FunctionCalls &f) { return f.callbacks; }},
      {"faasvisor_async_callback_retries_total", "counter", "Callback attempts that failed and were retried.",
       [](const async::FunctionCalls &f) { return f.callback_retries; }},
      {"faasvisor_async_callback_dropped_total", "counter", "Results dropped after the last callback attempt failed.",
       [](const async::FunctionCalls &f) { return f.callback_dropped; }},
  };
  for (const Family &fam : kFamilies) {
    family(out, fam.name, fam.type, fam.help);
    node.pool->for_each_function([&](pool::Function &fn) {
      const async::FunctionCalls *fc = calls.find(fn.name());
      sample(out, fam.name, fn_label(fn), fc == nullptr ? 0.0 : static_cast<double>(fam.value(*fc)));
    });
  }
  const async::JournalStats &js = calls.journal().stats();
  struct NodeWide {
    const char *name, *type, *help;
    uint64_t value;
  };
  const NodeWide node_wide[] = {
      {"faasvisor_async_memory_bytes", "gauge", "Bytes held by live async calls (requests and results).",
       calls.memory_bytes()},
      {"faasvisor_async_journal_segments", "gauge", "Segment files of the async journal.",
       calls.journal().segment_count()},
      {"faasvisor_async_journal_fsyncs_total", "counter", "Journal batches made durable (one fsync each).",
       js.batches},
      {"faasvisor_async_journal_records_total", "counter", "Journal records made durable.", js.records},
      {"faasvisor_async_journal_failures_total", "counter", "Journal batches that failed to write.", js.failures},
  };
  for (const auto &[name, type, help, value] : node_wide) {
    family(out, name, type, help);
    out += name;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  }
}

}  // namespace

std::string render_metrics(NodeImpl &node) {
  std::string out;
  pool::Pool &pool = *node.pool;
  family(out, "gateway_function_invocation_total", "counter", "Invocations by function and status code.");
  pool.for_each_function([&](pool::Function &fn) {
    for (const auto &[code, count] : fn.stats.by_status)
      sample(out, "gateway_function_invocation_total",
             fn_label(fn) + ",code=\"" + std::to_string(code) + "\"", static_cast<double>(count));
  });
  family(out, "gateway_functions_seconds", "histogram", "Invocation time, arrival to response, in seconds.");
  pool.for_each_function(
      [&](pool::Function &fn) { fn.stats.exec_seconds.append_prometheus(out, "gateway_functions_seconds", fn_label(fn)); });
  per_function(out, pool, "gateway_service_count", "gauge", "Instances of the function (booting, warm or busy).",
               [&](pool::Function &fn) { return fn.active(); });

  per_function(out, pool, "faasvisor_cold_starts_total", "counter", "Invocations served by a freshly started instance.",
               [&](pool::Function &fn) { return fn.stats.cold; });
  family(out, "faasvisor_instances", "gauge", "Instances by state.");
  pool.for_each_function([&](pool::Function &fn) {
    const std::pair<const char *, uint32_t> states[] = {
        {"booting", fn.booting}, {"warm", fn.warm}, {"busy", fn.busy}, {"stopping", fn.stopping}};
    for (const auto &[state, n] : states)
      sample(out, "faasvisor_instances", fn_label(fn) + ",state=\"" + state + "\"", n);
  });
  family(out, "faasvisor_init_seconds", "histogram", "Instance start to ready, in seconds.");
  pool.for_each_function(
      [&](pool::Function &fn) { fn.stats.init_seconds.append_prometheus(out, "faasvisor_init_seconds", fn_label(fn)); });
  per_function(out, pool, "faasvisor_instance_memory_bytes", "gauge", "Measured memory of the function's live instances.",
               [&](pool::Function &fn) { return fn.memory_total_bytes(); });
  per_function(out, pool, "faasvisor_queue_depth", "gauge", "Invocations waiting for an instance.",
               [&](pool::Function &fn) { return fn.queue.size(); });
  per_function(out, pool, "faasvisor_evictions_total", "counter", "Idle instances stopped to stay within the memory budget.",
               [&](pool::Function &fn) { return fn.stats.evictions; });
  per_function(out, pool, "faasvisor_keepalive_stops_total", "counter", "Idle instances stopped by the keep-alive policy.",
               [&](pool::Function &fn) { return fn.stats.keepalive_stops; });
  per_function(out, pool, "faasvisor_prewarms_total", "counter", "Instances started by the keep-alive policy ahead of an arrival.",
               [&](pool::Function &fn) { return fn.stats.prewarms; });
  family(out, "faasvisor_instance_seconds_total", "counter", "Instance time by state (boot, idle, busy).");
  uint64_t now = monotonic_ns();
  pool.for_each_function([&](pool::Function &fn) {
    pool::Utilisation u = fn.utilisation(now);
    sample(out, "faasvisor_instance_seconds_total", fn_label(fn) + ",state=\"boot\"", u.boot_s);
    sample(out, "faasvisor_instance_seconds_total", fn_label(fn) + ",state=\"idle\"", u.idle_s);
    sample(out, "faasvisor_instance_seconds_total", fn_label(fn) + ",state=\"busy\"", u.busy_s);
  });
  per_function(out, pool, "faasvisor_idle_memory_byte_seconds_total", "counter", "Memory held by idle instances over time.",
               [&](pool::Function &fn) { return fn.utilisation(now).idle_memory_byte_s; });
  family(out, "faasvisor_network_bytes_total", "counter",
         "Bytes sent and received by the function's instances over their network (faasvisor.network=egress).");
  pool.for_each_function([&](pool::Function &fn) {
    if (!fn.spec().network.egress) return;
    uint64_t sent = fn.stats.network_sent_bytes, received = fn.stats.network_received_bytes;
    fn.instances.for_each([&](pool::Instance &inst) {
      uint64_t s = 0, r = 0;
      if (inst.network_traffic(&s, &r)) sent += s, received += r;
    });
    sample(out, "faasvisor_network_bytes_total", fn_label(fn) + ",direction=\"sent\"", static_cast<double>(sent));
    sample(out, "faasvisor_network_bytes_total", fn_label(fn) + ",direction=\"received\"", static_cast<double>(received));
  });
  append_async_metrics(out, node);
  family(out, "faasvisor_memory_budget_bytes", "gauge", "The node's memory budget for instances.");
  out += "faasvisor_memory_budget_bytes " + std::to_string(pool.options().memory_budget_bytes) + "\n";
  family(out, "faasvisor_memory_reserved_bytes", "gauge", "Memory limits of live instances, held against the budget.");
  out += "faasvisor_memory_reserved_bytes " + std::to_string(pool.reserved_bytes()) + "\n";
  family(out, "faasvisor_connections", "gauge", "Open client connections.");
  out += "faasvisor_connections " + std::to_string(node.connections.size()) + "\n";
  return out;
}

}  // namespace faasvisor
