// The one place that names the concrete backends (backend/process.h, oci.h, qemu.h): the rest
// of the node sees only backend::Backend through the pool.
#pragma once

#include "faasvisor/node.h"
#include "util/result.h"

namespace faasvisor {

struct NodeImpl;

// What the options say of the backends, checked before anything starts (--accel).
Status check_backend_options(const NodeOptions &options);
// Adds every backend to node.pool; node.ring, timers and cgroups are set up, and the
// options passed check_backend_options.
void add_backends(NodeImpl &node, const NodeOptions &options);

}  // namespace faasvisor
