// faasvisord: wires the faasvisor library to the command line. Nothing else lives here.
#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "model/units.h"
#include "faasvisor/node.h"
#include "util/log.h"
#include "util/number.h"

namespace {

void usage(FILE *out) {
  std::fprintf(out,
               "usage: faasvisord [--listen ADDR:PORT] [--max-connections N]\n"
               "                  [--idle-timeout-ms N] [--header-timeout-ms N] [--body-timeout-ms N]\n"
               "                  [--shutdown-grace-ms N] [--stop-grace-ms N]\n"
               "                  [--max-body-bytes N] [--max-header-bytes N] [--queue N]\n"
               "                  [--stem-pool N] [--stem PATH] [--memory-budget SIZE]\n"
               "                  [--qemu PATH] [--vm-kernel PATH] [--accel auto|kvm|tcg] (microvm, unikernel)\n"
               "                  [--image-cache DIR] (default /var/lib/faasvisor/images)\n"
               "                  [--registry-auth CONFIG.JSON] [--insecure-registry HOST:PORT]...\n"
               "                  [--max-image-bytes SIZE] (POST /system/images, default 2Gi)\n"
               "                  [--image-cache-max SIZE] (evict unused images past it; default 0: never)\n"
               "                  [--state-dir DIR|none] (default /var/lib/faasvisor/state)\n"
               "                  [--store etcd://HOST:PORT[,HOST:PORT...]] [--store-prefix /PATH]\n"
               "                  [--advertise ADDR:PORT]\n"
               "                  [--memory-sample-ms N] [--policy-time-scale X]\n"
               "                  [--async-queue N] [--async-concurrency N] [--async-memory SIZE]\n"
               "                  [--async-callback-attempts N] [--async-callback-backoff-ms N]\n"
               "                  [--async-callback-timeout-ms N]\n"
               "                  [--log-level debug|info|warn|error]\n"
               "                  [--basic-auth-dir DIR] [--protect-metrics] [--insecure-no-auth]\n"
               "                  [--image-root DIR]... (host paths a deployment's image may name)\n"
               "                  [--dns ADDR]... (instances' nameservers; default: the host's)\n"
               "                  [--network-subnet A.B.C.0/24] (the instances' bridge; default: from the pid)\n");
}

}  // namespace

int main(int argc, char **argv) {
  faasvisor::NodeOptions options;
  // The daemon owns its process: it asks for every process-wide change the library makes
  // only when asked (include/faasvisor/node.h).
  options.handle_signals = true;
  options.ignore_sigpipe = true;
  options.raise_fd_limit = true;
  options.print_banner = true;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    }
    // Flags without a value.
    if (arg == "--protect-metrics") {
      options.protect_metrics = true;
      continue;
    }
    if (arg == "--insecure-no-auth") {
      options.insecure_no_auth = true;
      continue;
    }
    std::string inline_value;
    const char *value = nullptr;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
      value = inline_value.c_str();
    } else if (i + 1 >= argc) {
      std::fprintf(stderr, "faasvisord: %s needs a value\n", arg.c_str());
      usage(stderr);
      return 2;
    } else {
      value = argv[++i];
    }
    std::optional<uint64_t> number = faasvisor::parse_decimal(value);
    bool numeric = number.has_value();
    uint64_t n = number.value_or(0);
    auto need_number = [&]() {
      if (numeric) return true;
      std::fprintf(stderr, "faasvisord: %s wants a whole number, not '%s'\n", arg.c_str(), value);
      return false;
    };
    if (arg == "--listen") options.listen = value;
    else if (arg == "--memory-budget") {
      auto bytes = faasvisor::parse_memory_bytes(value);
      if (!bytes || *bytes == 0) {
        std::fprintf(stderr, "faasvisord: --memory-budget wants a size such as 2Gi, not '%s'\n", value);
        return 2;
      }
      options.memory_budget_bytes = *bytes;
    }
    else if (arg == "--stem") options.stem_path = value;
    else if (arg == "--image-cache") {
      if (value[0] != '/') {
        std::fprintf(stderr, "faasvisord: --image-cache wants an absolute directory, not '%s'\n", value);
        return 2;
      }
      options.image_cache_dir = value;
    }
    else if (arg == "--state-dir") {
      if (value[0] != '/' && std::string(value) != "none") {
        std::fprintf(stderr, "faasvisord: --state-dir wants an absolute directory or 'none', not '%s'\n", value);
        return 2;
      }
      options.state_dir = value;
    }
    else if (arg == "--registry-auth") {
      if (value[0] != '/') {
        std::fprintf(stderr, "faasvisord: --registry-auth wants the absolute path of a Docker config.json, not '%s'\n", value);
        return 2;
      }
      options.registry_auth = value;
    }
    else if (arg == "--insecure-registry") options.insecure_registries.emplace_back(value);
    else if (arg == "--image-cache-max") {
      auto bytes = faasvisor::parse_memory_bytes(value);
      if (!bytes) {
        std::fprintf(stderr, "faasvisord: --image-cache-max wants a size such as 20Gi (0: no limit), not '%s'\n", value);
        return 2;
      }
      options.image_cache_max_bytes = *bytes;
    }
    else if (arg == "--max-image-bytes") {
      auto bytes = faasvisor::parse_memory_bytes(value);
      if (!bytes || *bytes == 0) {
        std::fprintf(stderr, "faasvisord: --max-image-bytes wants a size such as 2Gi, not '%s'\n", value);
        return 2;
      }
      options.max_image_bytes = *bytes;
    }
    else if (arg == "--store") options.store = value;
    else if (arg == "--store-prefix") options.store_prefix = value;
    else if (arg == "--advertise") options.advertise = value;
    else if (arg == "--basic-auth-dir") options.basic_auth_dir = value;
    else if (arg == "--image-root") options.image_roots.emplace_back(value);
    else if (arg == "--dns") {
      in_addr addr{};
      if (inet_pton(AF_INET, value, &addr) != 1) {
        std::fprintf(stderr, "faasvisord: --dns wants an IPv4 address, not '%s'\n", value);
        return 2;
      }
      options.dns.emplace_back(value);
    }
    else if (arg == "--network-subnet") {
      unsigned a, b, c;
      char tail[8] = {};
      if (std::sscanf(value, "%u.%u.%u.0/24%1s", &a, &b, &c, tail) != 3 || a > 255 || b > 255 || c > 255) {
        std::fprintf(stderr, "faasvisord: --network-subnet wants A.B.C.0/24, not '%s'\n", value);
        return 2;
      }
      options.network_subnet = value;
    }
    else if (arg == "--async-memory") {
      auto bytes = faasvisor::parse_memory_bytes(value);
      if (!bytes || *bytes == 0) {
        std::fprintf(stderr, "faasvisord: --async-memory wants a size such as 256Mi, not '%s'\n", value);
        return 2;
      }
      options.async_memory_bytes = *bytes;
    }
    else if (arg == "--qemu") options.qemu_path = value;
    else if (arg == "--vm-kernel") options.vm_kernel = value;
    else if (arg == "--accel") options.accel = value;
    else if (arg == "--policy-time-scale") {
      char *end = nullptr;
      double scale = std::strtod(value, &end);
      if (*end != '\0' || !(scale >= 1 && scale <= 1e6)) {
        std::fprintf(stderr, "faasvisord: --policy-time-scale wants a number from 1 to 1e6\n");
        return 2;
      }
      options.policy_time_scale = scale;
    }
    else if (arg == "--log-level") {
      using faasvisor::log::Level;
      std::string v = value;
      if (v == "debug") faasvisor::log::set_level(Level::debug);
      else if (v == "info") faasvisor::log::set_level(Level::info);
      else if (v == "warn") faasvisor::log::set_level(Level::warn);
      else if (v == "error") faasvisor::log::set_level(Level::error);
      else {
        std::fprintf(stderr, "faasvisord: unknown log level '%s'\n", value);
        return 2;
      }
    } else if (!need_number()) return 2;
    else if (arg == "--max-connections") options.max_connections = static_cast<uint32_t>(n);
    else if (arg == "--idle-timeout-ms") options.idle_timeout_ms = n;
    else if (arg == "--header-timeout-ms") options.header_timeout_ms = n ? n : 1;
    else if (arg == "--body-timeout-ms") options.body_timeout_ms = n ? n : 1;
    else if (arg == "--shutdown-grace-ms") options.shutdown_grace_ms = n;
    else if (arg == "--stop-grace-ms") options.stop_grace_ms = n;
    else if (arg == "--max-body-bytes") options.max_body_bytes = n;
    else if (arg == "--max-header-bytes") options.max_header_bytes = static_cast<uint32_t>(n);
    else if (arg == "--queue") options.max_queue_per_function = static_cast<uint32_t>(n);
    else if (arg == "--stem-pool") options.stem_pool_size = static_cast<uint32_t>(n);
    else if (arg == "--memory-sample-ms") options.memory_sample_ms = n ? n : 1;
    else if (arg == "--async-queue" && n >= 1) options.async_queue_per_function = static_cast<uint32_t>(n);
    else if (arg == "--async-concurrency" && n >= 1) options.async_concurrency = static_cast<uint32_t>(n);
    else if (arg == "--async-callback-attempts" && n >= 1) options.async_callback_attempts = static_cast<uint32_t>(n);
    else if (arg == "--async-callback-backoff-ms") options.async_callback_backoff_ms = n;
    else if (arg == "--async-callback-timeout-ms" && n >= 1) options.async_callback_timeout_ms = n;
    else {
      std::fprintf(stderr, "faasvisord: unknown option %s\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  std::string error;
  auto node = faasvisor::Node::create(options, &error);
  if (!node) {
    std::fprintf(stderr, "faasvisord: %s\n", error.c_str());
    return 1;
  }
  return node->run();
}
