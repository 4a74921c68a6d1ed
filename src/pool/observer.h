// What an embedder hears of the pool's instances (server/embed.cc): each start, READY and
// stop, called on the loop thread from inside the pool. An observer only records; it must
// not call back into the pool.
#pragma once

#include <cstdint>
#include <string_view>

namespace faasvisor::pool {

class Instance;

enum class InstanceChange { started, ready, stopping, stopped };

class PoolObserver {
 public:
  // reason: stopping's why (empty otherwise); init_ns: ready's start-to-READY time.
  virtual void instance_changed(const Instance &inst, InstanceChange change, std::string_view reason,
                                bool failed_boot, uint64_t init_ns) = 0;

 protected:
  ~PoolObserver() = default;
};

}  // namespace faasvisor::pool
