// A deployed function: its spec (replaced on update), its instances, its warm list and its
// queue of invocations waiting for an instance.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "api/deploy.h"
#include "pool/instance.h"
#include "pool/invocation.h"
#include "stats/summary.h"
#include "util/intrusive_list.h"

namespace faasvisor::backend {
class Backend;
}

namespace faasvisor::pool {

struct FunctionStats {
  uint64_t cold = 0;
  uint64_t warm = 0;
  uint64_t errors = 0;   // answered 5xx or 429
  stats::Summary init_ms;
  stats::Summary exec_cold_ms;
  stats::Summary exec_warm_ms;

  void reset() { *this = FunctionStats(); }
};

class Function {
 public:
  Function(std::shared_ptr<const FunctionSpec> spec, backend::Backend &backend)
      : spec_(std::move(spec)), backend_(&backend) {}
  Function(const Function &) = delete;
  Function &operator=(const Function &) = delete;
  ~Function();

  const FunctionSpec &spec() const { return *spec_; }
  const std::shared_ptr<const FunctionSpec> &spec_ptr() const { return spec_; }
  const std::string &name() const { return spec_->name; }
  backend::Backend &backend() const { return *backend_; }
  uint64_t generation() const { return generation_; }
  void replace_spec(std::shared_ptr<const FunctionSpec> spec, backend::Backend &backend) {
    spec_ = std::move(spec);
    backend_ = &backend;
    ++generation_;
  }

  // Live instances by state (stopping ones are not counted against the limit's capacity,
  // but they are counted as instances still holding resources).
  uint32_t booting = 0, warm = 0, busy = 0, stopping = 0;
  uint32_t active() const { return booting + warm + busy; }

  IntrusiveList<Instance, &Instance::member_hook> instances;  // every live instance
  IntrusiveList<Instance, &Instance::warm_hook> warm_list;    // idle, most recently used first
  IntrusiveList<Invocation, &Invocation::queue_hook> queue;   // waiting, oldest first

  FunctionStats stats;
  uint64_t invocation_count = 0;
  bool deleted = false;

 private:
  std::shared_ptr<const FunctionSpec> spec_;
  backend::Backend *backend_;
  uint64_t generation_ = 1;
};

}  // namespace faasvisor::pool
