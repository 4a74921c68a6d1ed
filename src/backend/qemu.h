// The VM backends: each instance is a QEMU process in a sandbox of its own (faasvisor-stem:
// its own cgroup with the function's limits, namespaces, a parent-death signal), held by the
// sandbox's pidfd, whose guest speaks the instance protocol over QEMU's stdio (the node's
// pipes). QEMU's own stderr is the instance's log. One class, two kinds of guest:
//
//   microvm    a Linux microVM: -M microvm booting the host's kernel (uncompressed vmlinux
//              at its PVH entry, see tools/vmkernel) with the function's initramfs as image
//              (tools/mkinitramfs: /init is faasvisor-vminit, src/vm/vminit.c). The function's
//              command and environment travel on the kernel command line (fvspec=). The
//              protocol runs on a virtio serial port (virtio-mmio); COM1 is the kernel's
//              console, sent to the log. Images without the virtio modules use COM1.
//   unikernel  a PVH ELF image per function that speaks the protocol itself on a virtio
//              serial port (the kit's virtio-mmio driver; COM1 carries its crash reports to
//              the log), booted with the leanest microvm machine (no PIT, PIC, RTC, ACPI or
//              option ROMs).
//
// The guest's RAM is the function's memory limit. A guest that panics or whose function
// exits reboots, and -no-reboot makes QEMU exit: the pool sees an instance exit like any
// other. KVM is used only where it works (QemuHost probes it at start, off the loop).
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "io/timer.h"
#include "proc/reaper.h"

namespace faasvisor::backend {

enum class VmKind { microvm, unikernel };
enum class AccelChoice { automatic, kvm, tcg };
Result<AccelChoice> parse_accel(std::string_view text);  // "auto", "kvm" or "tcg"

// A QEMU process and the node's ends of its stdin, stdout (the guest's serial port) and
// stderr pipes, all non-blocking.
struct QemuProcess {
  proc::Child child;
  int in = -1, out = -1, err = -1;
  void close_fds();
};
Result<QemuProcess> spawn_qemu(std::vector<std::string> &args, int extra_fd);

struct QemuHostOptions {
  std::string qemu_path;    // empty: qemu-system-x86_64 on PATH
  std::string kernel_path;  // empty: BUILD/vm/vmlinux beside the daemon, else /boot/vmlinuz-*
  AccelChoice accel = AccelChoice::automatic;
  uint64_t kvm_probe_timeout_ms = 2000;
};

// What both VM backends share, found once at node start: QEMU, the microVM kernel and the
// accelerator. With --accel=auto and a /dev/kvm, QEMU boots the microVM kernel (or, without
// one, a tiny PVH stub) with -accel kvm, watched from the loop's timer, never waited for;
// until the guest prints on its serial port, and if it fails or stays silent, guests use TCG.
class QemuHost {
 public:
  QemuHost(io::TimerQueue &timers, QemuHostOptions options);
  ~QemuHost();
  QemuHost(const QemuHost &) = delete;
  QemuHost &operator=(const QemuHost &) = delete;

  const std::string &qemu() const { return qemu_; }  // empty if not found
  const std::string &qemu_missing() const { return qemu_missing_; }
  const std::string &kernel() const { return kernel_; }  // empty if not found
  const std::string &kernel_missing() const { return kernel_missing_; }
  bool use_kvm() const { return use_kvm_; }
  const char *accelerator() const { return use_kvm_ ? "kvm" : "tcg"; }
  const std::string &accelerator_why() const { return accel_why_; }
  // With --accel=kvm, why KVM cannot be used (no /dev/kvm, or the probe guest did not run):
  // the VM backends are then unavailable. Empty otherwise.
  const std::string &kvm_broken() const { return kvm_broken_; }

 private:
  static void on_probe_timer(io::Timer &t);
  void start_probe();
  void finish_probe(bool ok, std::string why);

  io::TimerQueue &timers_;
  QemuHostOptions options_;
  std::string qemu_, qemu_missing_, kernel_, kernel_missing_;
  bool use_kvm_ = false;
  std::string accel_why_;
  std::string kvm_broken_;
  QemuProcess probe_;
  uint64_t probe_started_ns_ = 0;
  std::string probe_what_;  // "the Linux guest" or "a test guest"
  bool probe_decided_ = false;
  bool probe_ok_ = false;
  std::string probe_why_;
  io::Timer probe_timer_;
};

class QemuBackend final : public Backend {
 public:
  // stem_path: faasvisor-stem, the sandbox each QEMU runs in; cgroups: the node's tree.
  QemuBackend(std::shared_ptr<QemuHost> host, VmKind kind, const proc::CgroupTree &cgroups,
              io::Ring &ring, std::string stem_path);

  const char *name() const override { return kind_ == VmKind::microvm ? "microvm" : "unikernel"; }
  bool available(std::string *why_not) const override;
  Status validate(const FunctionSpec &spec) const override;
  Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(Launched &launched) override;
  bool idle() const override { return reaper_.idle(); }
  // The PSS of the instance's cgroup: guest RAM QEMU touched, the translation cache, QEMU.
  Result<uint64_t> memory_usage(const Launched &launched) const override;
  proc::MemoryFiles memory_files(const Launched &launched) const override {
    return cgroups_.memory_files(launched.cgroup, true);
  }
  bool out_of_memory(const Launched &launched) const override {
    return cgroups_.oom_kills(launched.cgroup) > 0;
  }
  // The outer stem kills and reaps the sandbox's init, and QEMU with it (src/stem/stem.c).
  int kill_signal() const override { return SIGUSR2; }
  bool console_preamble() const override { return true; }
  void describe(std::vector<std::pair<std::string, std::string>> &out) const override;
  // A Linux guest boots in ~1-2 s under TCG, several times that on a busy 2-core machine.
  uint64_t default_boot_timeout_ms() const override {
    return kind_ == VmKind::microvm && !host_->use_kvm() ? 60'000 : 0;
  }

  // QEMU beside the guest's RAM: its TCG translation cache and itself (bench/vm: ~65 MiB
  // for a microVM, ~30 MiB for a unikernel).
  uint64_t memory_overhead_bytes(const FunctionSpec &) const override;
  // The least guest RAM a deploy may ask for.
  uint64_t min_memory_bytes() const;
  // TCG's translation cache: large enough for a Linux guest's hot code, small for a unikernel.
  uint32_t tb_size_mib() const { return kind_ == VmKind::microvm ? 32 : 8; }

  // Whether a microVM carries the protocol on virtio (annotation faasvisor.vm.transport,
  // else whether its image holds the virtio_console module) or on COM1: decided once per
  // deployment (FunctionSpec::vm_virtio), since the image's cpio headers are read for it.
  void settle(FunctionSpec &spec) const override;
  // A microVM: a TAP in the instance's namespace, virtio-net-device, vminit configures it.
  // A unikernel has no network stack.
  bool network_support(std::string *why_not) const override;

 private:
  std::vector<std::string> accelerator_args() const;
  std::vector<std::string> microvm_args(const FunctionSpec &spec, std::string_view instance_name,
                                        const net::Lease &network) const;
  std::vector<std::string> unikernel_args(const FunctionSpec &spec) const;

  std::shared_ptr<QemuHost> host_;
  VmKind kind_;
  const proc::CgroupTree &cgroups_;
  proc::Reaper reaper_;  // sandboxes discarded before their QEMU started, until they exit
  std::string stem_path_;
};

// The kernel command line's fvspec= value for a microVM (argv, an empty entry, then the
// environment, NUL-separated, percent-encoded). Exposed for tests.
std::string encode_vm_spec(const std::vector<std::string> &argv,
                           const std::vector<std::string> &env);

}  // namespace faasvisor::backend
