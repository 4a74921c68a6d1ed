#include "pool/function.h"

#include <cassert>

namespace faasvisor::pool {

Function::~Function() {
  assert(instances.empty() && warm_list.empty() && queue.empty());
}

}  // namespace faasvisor::pool

namespace faasvisor::pool {

Utilisation Function::utilisation(uint64_t now_ns) {
  uint64_t boot = stats.boot_ns, idle = stats.idle_ns, busy = stats.busy_ns;
  double idle_mem = stats.idle_memory_byte_ns;
  instances.for_each([&](Instance &inst) {
    uint64_t open = now_ns > inst.state_since_ns() ? now_ns - inst.state_since_ns() : 0;
    switch (inst.state()) {
      case InstanceState::booting: boot += open; break;
      case InstanceState::warm:
        idle += open;
        idle_mem += static_cast<double>(open) * static_cast<double>(inst.memory_bytes());
        break;
      case InstanceState::busy: busy += open; break;
      case InstanceState::stopping: break;
    }
  });
  return {static_cast<double>(boot) / 1e9, static_cast<double>(idle) / 1e9,
          static_cast<double>(busy) / 1e9, idle_mem / 1e9};
}

uint64_t Function::memory_total_bytes() {
  uint64_t total = 0;
  instances.for_each([&](Instance &inst) {
    if (inst.state() != InstanceState::stopping) total += inst.memory_bytes();
  });
  return total;
}

uint32_t Function::memory_sampled_instances() {
  uint32_t n = 0;
  instances.for_each([&](Instance &inst) {
    if (inst.state() != InstanceState::stopping && inst.memory_bytes() > 0) ++n;
  });
  return n;
}

}  // namespace faasvisor::pool
