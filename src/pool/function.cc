#include "pool/function.h"

#include <cassert>

namespace faasvisor::pool {

Function::~Function() {
  assert(instances.empty() && warm_list.empty() && queue.empty());
}

}  // namespace faasvisor::pool
