#include "server/backends.h"

#include <unistd.h>

#include <memory>

#include "backend/oci.h"
#include "backend/process.h"
#include "backend/qemu.h"
#include "server/node_impl.h"

namespace faasvisor {

Status check_backend_options(const NodeOptions &options) {
  auto accel = backend::parse_accel(options.accel);
  if (!accel) return accel.error();
  return {};
}

void add_backends(NodeImpl &node, const NodeOptions &options) {
  backend::ProcessBackendOptions process_options;
  process_options.stem_path = options.stem_path.empty() ? helper_path(options, "faasvisor-stem") : options.stem_path;
  process_options.stem_pool_size = options.stem_pool_size;
  process_options.adapter_path = helper_path(options, "faasvisor-adapter");
  process_options.template_library = helper_path(options, "libfaasvisor-template.so");
  if (access(process_options.template_library.c_str(), R_OK) != 0) process_options.template_library.clear();
  node.pool->add_backend(
      std::make_unique<backend::ProcessBackend>(node.cgroups, *node.ring, *node.timers, process_options));
  for (auto runtime : {backend::OciRuntime::crun, backend::OciRuntime::runc, backend::OciRuntime::gvisor}) {
    backend::OciBackendOptions oci_options;
    oci_options.runtime = runtime;
    oci_options.adapter_path = process_options.adapter_path;
    node.pool->add_backend(std::make_unique<backend::OciBackend>(node.cgroups, *node.ring, oci_options));
  }
  backend::QemuHostOptions qemu_options;
  qemu_options.qemu_path = options.qemu_path;
  qemu_options.kernel_path = options.vm_kernel;
  qemu_options.accel = *backend::parse_accel(options.accel);
  auto qemu = std::make_shared<backend::QemuHost>(*node.timers, qemu_options);
  for (auto kind : {backend::VmKind::microvm, backend::VmKind::unikernel})
    node.pool->add_backend(std::make_unique<backend::QemuBackend>(qemu, kind, node.cgroups, *node.ring,
                                                                  process_options.stem_path));
}

}  // namespace faasvisor
