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
  family(out, "faasvisor_memory_budget_bytes", "gauge", "The node's memory budget for instances.");
  out += "faasvisor_memory_budget_bytes " + std::to_string(pool.options().memory_budget_bytes) + "\n";
  family(out, "faasvisor_memory_reserved_bytes", "gauge", "Memory limits of live instances, held against the budget.");
  out += "faasvisor_memory_reserved_bytes " + std::to_string(pool.reserved_bytes()) + "\n";
  family(out, "faasvisor_connections", "gauge", "Open client connections.");
  out += "faasvisor_connections " + std::to_string(node.connections.size()) + "\n";
  return out;
}

}  // namespace faasvisor
