#include "backend/qemu.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/environment.h"
#include "backend/process.h"
#include "proc/spawn.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::backend {
namespace {
// faasvisor-adapter inside a microVM's initramfs (tools/mkinitramfs --file .../faasvisor-adapter).
constexpr const char *kAdapterInGuest = "/faasvisor-adapter";
}  // namespace
namespace {

// The least RAM Debian's cloud kernel boots and serves in with a function's initramfs
// (measured by bench/vm; shared MACHINE-NOTES found the same).
constexpr uint64_t kMicrovmMinMemory = 96ull << 20;
constexpr uint64_t kUnikernelMinMemory = 2ull << 20;
// x86's COMMAND_LINE_SIZE: the whole kernel command line, fvspec= included.
constexpr size_t kKernelCmdlineMax = 2048;
// QEMU runs a handful of threads (main loop, RCU, vCPU, I/O workers up to 64): the
// instance's pids limit is at least this, whatever the function asks for.
constexpr uint32_t kQemuMinPids = 128;
// The cgroup's memory limit is the guest's RAM, QEMU's expected cost (memory_overhead_bytes,
// what the budget holds) and this slack: a 96Mi guest whose RAM is all touched (huge pages)
// had QEMU at 144 of 156 MiB after 6 MiB bodies, and the translation cache may still grow.
constexpr uint64_t kCgroupSlack = 32ull << 20;
// The annotation that picks a microVM's protocol transport: "virtio" (a virtio serial port,
// the default where the image holds the virtio_console module) or "serial" (COM1: the old
// path, far slower, kept to compare against and for images built without the modules).
constexpr const char *kTransportAnnotation = "faasvisor.vm.transport";
constexpr const char *kVirtioConsoleModule = "lib/modules/virtio_console.ko";
// The instance name's longest form: a 63-character function name, '-', a 64-bit number.
constexpr size_t kLongestInstanceName = 63 + 1 + 20;
constexpr uint64_t kProbeTickNs = 10'000'000;

// tsc_early_khz/lpj/no_timer_check: no calibration against the PIT (under TCG it hangs one
// boot in three). panic=-1 and reboot=t: a panic reboots at once by triple fault, and
// QEMU's -no-reboot turns that into QEMU's exit. quiet: the boot prints little on ttyS0
// (the node skips it as console preamble); /init then turns the console off. The rest
// trims a TCG boot by about a third (~2.5 s -> ~1.7 s on a busy development machine): no
// crypto self-tests, audit or watchdog, expedited RCU grace periods, and no speculation
// mitigations (the guest runs one function; the boundary that matters is QEMU's).
constexpr const char *kMicrovmCmdline =
    "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=2000000 lpj=8000000 no_timer_check "
    "i8042.noaux i8042.nokbd random.trust_cpu=on mitigations=off cryptomgr.notests audit=0 "
    "nowatchdog rcupdate.rcu_expedited=1";

char *const kEnv[] = {
    const_cast<char *>("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    nullptr};

std::string find_on_path(const char *program) {
  const char *path = getenv("PATH");
  std::string dirs = path != nullptr && *path != '\0' ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + program;
    if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

std::string exe_dir() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return {};
  std::string path(exe, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1);
}

// The newest file matching pattern, or empty.
std::string newest(const char *pattern) {
  glob_t g{};
  std::string best;
  time_t best_mtime = 0;
  if (glob(pattern, 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      struct stat st {};
      if (stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode) &&
          (best.empty() || st.st_mtime > best_mtime)) {
        best = g.gl_pathv[i];
        best_mtime = st.st_mtime;
      }
    }
  }
  globfree(&g);
  return best;
}

Result<std::string> read_prefix(const std::string &path, size_t n) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open", errno);
  std::string out(n, '\0');
  ssize_t got = pread(fd, out.data(), n, 0);
  int err = errno;
  close(fd);
  if (got < 0) return errno_error("read", err);
  out.resize(static_cast<size_t>(got));
  return out;
}

template <typename T>
bool load(const std::string &data, uint64_t offset, T *out) {
  if (offset > data.size() || data.size() - offset < sizeof(T)) return false;
  std::memcpy(out, data.data() + offset, sizeof(T));
  return true;
}

// Whether path is an ELF image QEMU can boot by its PVH entry: an ELF (32- or 64-bit,
// x86) with a Xen ELF note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) in a PT_NOTE segment.
// Reads the headers and the note segments only (each at most 64 KiB).
Status check_pvh_elf(const std::string &path) {
  auto data = read_prefix(path, 4096);
  if (!data)
    return plain_error("field 'image'", "cannot read " + path + ": " + data.error().message());
  const std::string &d = *data;
  if (d.size() < 52 || std::memcmp(d.data(), "\177ELF", 4) != 0)
    return plain_error("field 'image'",
                       path + " is not an ELF file (the unikernel backend boots a PVH ELF image)");
  bool is64 = d[4] == 2;
  uint64_t phoff = 0;
  uint16_t phentsize = 0, phnum = 0;
  if (is64) {
    load(d, 32, &phoff);
    load(d, 54, &phentsize);
    load(d, 56, &phnum);
  } else {
    uint32_t off32 = 0;
    load(d, 28, &off32);
    phoff = off32;
    load(d, 42, &phentsize);
    load(d, 44, &phnum);
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return plain_error("field 'image'", "cannot read " + path + ": " + std::strerror(errno));
  std::string headers(size_t{phentsize} * phnum, '\0');
  bool found = false;
  if (phentsize >= 32 && pread(fd, headers.data(), headers.size(), static_cast<off_t>(phoff)) ==
                             static_cast<ssize_t>(headers.size())) {
    for (uint16_t i = 0; i < phnum && !found; ++i) {
      uint64_t at = uint64_t{i} * phentsize;
      uint32_t type = 0;
      uint64_t offset = 0, filesz = 0;
      load(headers, at, &type);
      if (type != 4) continue;  // PT_NOTE
      if (is64) {
        load(headers, at + 8, &offset);
        load(headers, at + 32, &filesz);
      } else {
        uint32_t o = 0, f = 0;
        load(headers, at + 4, &o);
        load(headers, at + 16, &f);
        offset = o;
        filesz = f;
      }
      std::string notes(std::min<uint64_t>(filesz, 64 * 1024), '\0');
      ssize_t got = pread(fd, notes.data(), notes.size(), static_cast<off_t>(offset));
      notes.resize(got > 0 ? static_cast<size_t>(got) : 0);
      uint64_t pos = 0;
      while (pos + 12 <= notes.size()) {
        uint32_t namesz = 0, descsz = 0, ntype = 0;
        load(notes, pos, &namesz);
        load(notes, pos + 4, &descsz);
        load(notes, pos + 8, &ntype);
        if (namesz == 4 && ntype == 18 && pos + 16 <= notes.size() &&
            notes.compare(pos + 12, 4, std::string("Xen\0", 4)) == 0) {
          found = true;
          break;
        }
        pos += 12 + (uint64_t{namesz} + 3) / 4 * 4 + (uint64_t{descsz} + 3) / 4 * 4;
      }
    }
  }
  close(fd);
  if (found) return {};
  return plain_error(
      "field 'image'",
      path + " has no PVH entry (no Xen PHYS32_ENTRY ELF note): QEMU cannot boot it");
}

// Looks for an entry of an uncompressed newc initramfs: its mode, or 0 if absent.
// Reads only the headers and names (a few entries for a function image), with pread on the
// loop (QemuBackend::validate; see Backend::validate on why that is not off the loop yet).
Result<uint32_t> cpio_mode(const std::string &path, std::string_view name) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("open", errno);
  uint64_t offset = 0;
  uint32_t found = 0;
  for (int entries = 0; entries < 100000; ++entries) {
    char header[110];
    if (pread(fd, header, sizeof header, static_cast<off_t>(offset)) !=
            static_cast<ssize_t>(sizeof header) ||
        std::memcmp(header, "070701", 6) != 0)
      break;
    auto field = [&](int i) {
      return static_cast<uint32_t>(
          std::strtoul(std::string(header + 6 + i * 8, 8).c_str(), nullptr, 16));
    };
    uint32_t mode = field(1), filesize = field(6), namesize = field(11);
    if (namesize == 0 || namesize > 4096) break;
    std::string entry(namesize, '\0');
    if (pread(fd, entry.data(), namesize, static_cast<off_t>(offset + 110)) !=
        static_cast<ssize_t>(namesize))
      break;
    entry.resize(namesize - 1);
    if (entry == "TRAILER!!!") break;
    if (entry == name) {
      found = mode;
      break;
    }
    offset += (110 + namesize + 3) / 4 * 4;
    offset += (uint64_t{filesize} + 3) / 4 * 4;
  }
  close(fd);
  return found;
}

bool safe_in_cmdline(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '/' || c == ':' || c == ',' || c == '+' || c == '@';
}

// The KVM probe's guest: a PVH ELF whose 32-bit entry writes 'K' to COM1 and halts.
// Booted the way a unikernel is, it shows whether QEMU's guests run on this host's KVM (a
// present but broken KVM, as under some nested hypervisors, runs it at 100% CPU and never
// gets to the write). Built here, 218 bytes, so the probe needs no file from the build.
std::string probe_image() {
  constexpr uint64_t kBase = 0x100000;
  constexpr uint8_t kCode[] = {0x66, 0xBA, 0xF8, 0x03,  // mov dx, 0x3f8
                               0xB0, 'K',               // mov al, 'K'
                               0xEE,                    // out dx, al
                               0xF4,                    // hlt
                               0xEB, 0xFD};             // jmp back to hlt
  constexpr uint32_t kEhSize = 64, kPhSize = 56, kNoteOff = kEhSize + 2 * kPhSize, kNoteSize = 20;
  constexpr uint32_t kCodeOff = (kNoteOff + kNoteSize + 15) / 16 * 16;
  constexpr uint64_t kEntry = kBase + kCodeOff;
  constexpr uint64_t kFileSize = kCodeOff + sizeof kCode;
  std::string img;
  auto put = [&img](auto v) { img.append(reinterpret_cast<const char *>(&v), sizeof v); };
  img += std::string(
      "\x7f"
      "ELF\x02\x01\x01",
      7);
  img.append(9, '\0');
  put(uint16_t{2}), put(uint16_t{62}), put(uint32_t{1});  // ET_EXEC, x86-64, version
  put(kEntry), put(uint64_t{kEhSize}), put(uint64_t{0}), put(uint32_t{0});
  put(uint16_t{kEhSize}), put(uint16_t{kPhSize}), put(uint16_t{2}), put(uint16_t{64}),
      put(uint16_t{0}), put(uint16_t{0});
  // PT_LOAD (read+exec) of the whole file at kBase, then PT_NOTE.
  put(uint32_t{1}), put(uint32_t{5}), put(uint64_t{0}), put(kBase), put(kBase), put(kFileSize),
      put(kFileSize), put(uint64_t{0x1000});
  put(uint32_t{4}), put(uint32_t{4}), put(uint64_t{kNoteOff}), put(uint64_t{0}), put(uint64_t{0});
  put(uint64_t{kNoteSize}), put(uint64_t{kNoteSize}), put(uint64_t{4});
  // The Xen note XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit entry point.
  put(uint32_t{4}), put(uint32_t{4}), put(uint32_t{18});
  img += std::string("Xen\0", 4);
  put(static_cast<uint32_t>(kEntry));
  img.resize(kCodeOff, '\0');
  img.append(reinterpret_cast<const char *>(kCode), sizeof kCode);
  return img;
}

// The unikernel's machine: nothing but the CPU, RAM, COM1 and microvm's virtio-mmio slots.
// A Linux guest keeps the PIT
// (with acpi=off and no PIT it hangs) and the RTC (rtc=off costs it 2 s of boot).
constexpr const char *kUnikernelMachine =
    "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off";
// A microVM keeps ACPI: Debian's kernel finds virtio-mmio devices only in the ACPI tables
// QEMU's microvm machine writes (it is built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so
// the virtio_mmio.device= list QEMU would put on the command line with acpi=off is ignored).
constexpr const char *kMicrovmMachine = "microvm,x-option-roms=off,isa-serial=on";
// The serial transport's machine, as before virtio (no device needs ACPI there).
constexpr const char *kMicrovmSerialMachine = "microvm,x-option-roms=off,acpi=off,isa-serial=on";

}  // namespace

void QemuProcess::close_fds() {
  for (int *fd : {&in, &out, &err}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

// QEMU with the node's ends of three pipes (non-blocking): its stdin and stdout are the
// guest's serial port, its stderr QEMU's own messages. extra_fd, if any, becomes its fd 3.
// Only the KVM probe is started this way (instances start in a sandbox, QemuBackend::launch):
// setpriv gives it a parent-death signal, so a node killed mid-probe leaves no QEMU.
Result<QemuProcess> spawn_qemu(std::vector<std::string> &args, int extra_fd) {
  proc::StdioPipes pipes;
  if (Status st = proc::make_stdio_pipes(pipes); !st.ok()) return st.error();
  if (std::string setpriv = find_on_path("setpriv"); !setpriv.empty())
    args.insert(args.begin(), {setpriv, "--pdeathsig", "KILL", "--"});
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  proc::SpawnSetup setup;
  for (int i = 0; i < 3; ++i) posix_spawn_file_actions_adddup2(&setup.actions, pipes.child[i], i);
  if (extra_fd >= 0) posix_spawn_file_actions_adddup2(&setup.actions, extra_fd, 3);
  auto spawned = proc::spawn_with_pidfd(argv[0], setup, argv.data(), kEnv);
  if (!spawned) return spawned.error();
  QemuProcess out;
  out.child = std::move(*spawned);
  pipes.release_node_ends(&out.in, &out.out, &out.err);
  return out;
}

Result<AccelChoice> parse_accel(std::string_view text) {
  if (text == "auto") return AccelChoice::automatic;
  if (text == "kvm") return AccelChoice::kvm;
  if (text == "tcg") return AccelChoice::tcg;
  return plain_error("--accel", "expected auto, kvm or tcg");
}

std::string encode_vm_spec(const std::vector<std::string> &argv,
                           const std::vector<std::string> &env) {
  std::string out;
  auto put = [&out](std::string_view s) {
    for (char ch : s) {
      auto c = static_cast<unsigned char>(ch);
      if (safe_in_cmdline(c)) {
        out += ch;
      } else {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
      }
    }
    out += "%00";
  };
  for (const std::string &a : argv) put(a);
  put("");
  for (const std::string &e : env) put(e);
  return out;
}

// --- QemuHost -------------------------------------------------------------------------

QemuHost::QemuHost(io::TimerQueue &timers, QemuHostOptions options)
    : timers_(timers), options_(std::move(options)) {
  probe_timer_.owner = this;
  probe_timer_.callback = &QemuHost::on_probe_timer;

  qemu_ = options_.qemu_path.empty() ? find_on_path("qemu-system-x86_64") : options_.qemu_path;
  if (qemu_.empty()) {
    qemu_missing_ =
        "QEMU is not installed (no qemu-system-x86_64 on PATH; Debian: qemu-system-x86)";
  } else if (access(qemu_.c_str(), X_OK) != 0) {
    qemu_missing_ = "QEMU " + qemu_ + " is not an executable";
    qemu_.clear();
  } else {
    // -M microvm boots through its own firmware (qboot), from QEMU's data directory,
    // <prefix>/share/qemu beside <prefix>/bin/qemu-system-x86_64.
    std::string prefix = qemu_.substr(0, qemu_.rfind('/'));
    prefix = prefix.substr(0, prefix.rfind('/'));
    std::string firmware = prefix + "/share/qemu/bios-microvm.bin";
    if (access(firmware.c_str(), R_OK) != 0 &&
        access("/usr/share/qemu/bios-microvm.bin", R_OK) != 0) {
      qemu_missing_ =
          "QEMU's microvm firmware " + firmware + " is missing (Debian: qemu-system-data)";
      qemu_.clear();
    }
  }

  if (!options_.kernel_path.empty()) {
    kernel_ = options_.kernel_path;
  } else {
    // tools/vmkernel caches the uncompressed kernel in BUILD/vm (the daemon is BUILD/src).
    std::string cached = exe_dir() + "../vm/vmlinux";
    kernel_ = access(cached.c_str(), R_OK) == 0 ? cached : newest("/boot/vmlinuz-*-cloud-amd64");
    if (kernel_.empty()) kernel_ = newest("/boot/vmlinuz-*");
  }
  if (char *real = kernel_.empty() ? nullptr : realpath(kernel_.c_str(), nullptr);
      real != nullptr) {
    kernel_ = real;
    free(real);
  }
  if (kernel_.empty()) {
    kernel_missing_ =
        "no Linux kernel for microVMs (none in /boot; Debian: linux-image-cloud-amd64, then "
        "tools/vmkernel)";
  } else if (access(kernel_.c_str(), R_OK) != 0) {
    kernel_missing_ = "the microVM kernel " + kernel_ + " cannot be read";
    kernel_.clear();
  }

  switch (options_.accel) {
    case AccelChoice::tcg:
      accel_why_ = "chosen by --accel=tcg";
      break;
    case AccelChoice::kvm:
      // Forced, and still checked: where the probe guest does not run, the VM backends are
      // unavailable (deploys get a 400 saying why), never quietly moved to TCG.
      use_kvm_ = true;
      accel_why_ = "chosen by --accel=kvm";
      if (access("/dev/kvm", F_OK) != 0)
        kvm_broken_ = "--accel=kvm was given but this host has no /dev/kvm";
      else if (!qemu_.empty())
        start_probe();
      break;
    case AccelChoice::automatic:
      if (access("/dev/kvm", F_OK) != 0) {
        accel_why_ = "no /dev/kvm on this host";
      } else if (!qemu_.empty()) {
        start_probe();
      }
      break;
  }
  if (!qemu_.empty())
    FV_INFO("VM backends: %s, kernel %s, accelerator %s (%s)", qemu_.c_str(),
            kernel_.empty() ? "(none)" : kernel_.c_str(), accelerator(), accel_why_.c_str());
}

QemuHost::~QemuHost() {
  timers_.stop(probe_timer_);
  if (probe_.child.valid() && !probe_.child.reaped()) {
    probe_.child.signal(SIGKILL);
    probe_.child.wait();
  }
  probe_.close_fds();
}

void QemuHost::start_probe() {
  accel_why_ = options_.accel == AccelChoice::kvm ? "chosen by --accel=kvm (probing /dev/kvm)"
                                                   : "probing /dev/kvm (TCG until it answers)";
  std::vector<std::string> args = {
      qemu_,      "-accel", "kvm",     "-nodefaults", "-no-user-config",
      "-display", "none",   "-serial", "stdio",       "-no-reboot"};
  int image = -1;
  if (!kernel_.empty()) {
    // The microVM kernel itself, up to its first early console line: a trivial guest can
    // run on a KVM that cannot boot Linux (the development machines' nested KVM runs a
    // one-page long-mode stub, yet Linux never prints a byte there).
    probe_what_ = "the Linux guest";
    args.insert(args.end(), {"-M", kMicrovmSerialMachine, "-m", "96M", "-kernel", kernel_, "-append",
                             std::string(kMicrovmCmdline) + " earlyprintk=serial,ttyS0"});
  } else {
    // No kernel: a PVH stub, as an in-memory file QEMU opens as /proc/self/fd/3.
    probe_what_ = "a test guest";
    image = memfd_create("faasvisor-kvm-probe", MFD_CLOEXEC);
    std::string bytes = probe_image();
    if (image < 0 ||
        ::write(image, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
      std::string why = std::string("cannot start the KVM probe: ") + std::strerror(errno);
      if (image >= 0) close(image);
      finish_probe(false, why);
      return;
    }
    args.insert(args.end(), {"-M", kUnikernelMachine, "-m", "2M", "-kernel", "/proc/self/fd/3"});
  }
  auto spawned = spawn_qemu(args, image);
  if (image >= 0) close(image);
  if (!spawned) {
    finish_probe(false, "cannot start the KVM probe: " + spawned.error().message());
    return;
  }
  probe_ = std::move(*spawned);
  probe_started_ns_ = monotonic_ns();
  timers_.start(probe_timer_, probe_started_ns_ + kProbeTickNs);
}

void QemuHost::finish_probe(bool ok, std::string why) {
  if (options_.accel == AccelChoice::kvm) {
    accel_why_ = "chosen by --accel=kvm; " + why;
    if (!ok) {
      kvm_broken_ = "--accel=kvm was given but KVM does not run guests here: " + why;
      FV_ERROR("VM backends unavailable: %s", kvm_broken_.c_str());
    }
    return;
  }
  use_kvm_ = ok;
  accel_why_ = std::move(why);
  FV_INFO("VM backends: accelerator %s (%s)", accelerator(), accel_why_.c_str());
}

// The verdict is published once the probe's QEMU is reaped and its descriptors closed, so
// "probing" in /system/info means the probe still holds something of the node's.
void QemuHost::on_probe_timer(io::Timer &t) {
  auto &self = t.owner_as<QemuHost>();
  QemuProcess &probe = self.probe_;
  uint64_t now = monotonic_ns();
  uint64_t elapsed_ms = (now - self.probe_started_ns_) / 1'000'000;
  char buf[256];
  ssize_t n = read(probe.out, buf, sizeof buf);
  proc::ExitStatus status;
  auto reaped = probe.child.try_reap(&status);
  bool gone = !reaped || *reaped;
  if (!self.probe_decided_) {
    if (n > 0) {
      self.probe_decided_ = true;
      self.probe_ok_ = true;
      self.probe_why_ = self.probe_what_ + " printed under QEMU with -accel kvm after " +
                        std::to_string(elapsed_ms) + " ms";
    } else if (gone) {
      // QEMU's own words (e.g. an MSR it could not set) say why.
      ssize_t m = read(probe.err, buf, sizeof buf - 1);
      std::string said = m > 0 ? std::string(buf, static_cast<size_t>(m)) : std::string();
      if (size_t nl = said.find('\n'); nl != std::string::npos) said.resize(nl);
      self.probe_decided_ = true;
      self.probe_why_ = "QEMU with -accel kvm failed to run " + self.probe_what_ +
                        (said.empty() ? "" : ": " + said);
    } else if (elapsed_ms >= self.options_.kvm_probe_timeout_ms) {
      self.probe_decided_ = true;
      self.probe_why_ = "/dev/kvm is present but " + self.probe_what_ +
                        " printed nothing under -accel kvm in " +
                        std::to_string(self.options_.kvm_probe_timeout_ms) + " ms";
    }
    if (self.probe_decided_ && !gone) probe.child.signal(SIGKILL);
  }
  if (!gone) {
    self.timers_.start(self.probe_timer_, now + kProbeTickNs);
    return;
  }
  probe.close_fds();
  probe.child = proc::Child();  // reaped: this closes its pidfd
  self.finish_probe(self.probe_ok_, self.probe_why_);
}

// --- QemuBackend ----------------------------------------------------------------------

QemuBackend::QemuBackend(std::shared_ptr<QemuHost> host, VmKind kind,
                         const proc::CgroupTree &cgroups, io::Ring &ring, std::string stem_path)
    : host_(std::move(host)), kind_(kind), cgroups_(cgroups), reaper_(ring), stem_path_(std::move(stem_path)) {}

uint64_t QemuBackend::memory_overhead_bytes(const FunctionSpec &) const {
  constexpr uint64_t kQemuItself = 28ull << 20;
  if (host_->use_kvm()) return kQemuItself;
  return kQemuItself + (uint64_t{tb_size_mib()} << 20);
}

uint64_t QemuBackend::min_memory_bytes() const {
  return kind_ == VmKind::microvm ? kMicrovmMinMemory : kUnikernelMinMemory;
}

bool QemuBackend::available(std::string *why_not) const {
  if (host_->qemu().empty()) {
    *why_not = host_->qemu_missing();
    return false;
  }
  if (!host_->kvm_broken().empty()) {
    *why_not = host_->kvm_broken();
    return false;
  }
  if (!sandbox_available(stem_path_, why_not)) return false;
  if (kind_ == VmKind::microvm && host_->kernel().empty()) {
    *why_not = host_->kernel_missing();
    return false;
  }
  return true;
}

void QemuBackend::describe(std::vector<std::pair<std::string, std::string>> &out) const {
  if (host_->qemu().empty()) return;
  out.emplace_back("qemu", host_->qemu());
  if (kind_ == VmKind::microvm && !host_->kernel().empty())
    out.emplace_back("kernel", host_->kernel());
  out.emplace_back("accelerator", host_->accelerator());
  out.emplace_back("accelerator_why", host_->accelerator_why());
  out.emplace_back("min_memory", std::to_string(min_memory_bytes() >> 20) + "Mi");
}

Status QemuBackend::validate(const FunctionSpec &spec) const {
  // A unikernel speaks the protocol itself; a microVM runs faasvisor-adapter from its
  // initramfs for http and stdio (checked with the image below, docs/modes.md).
  if (spec.mode != FunctionSpec::Mode::protocol && kind_ != VmKind::microvm)
    return plain_error("annotations.faasvisor.mode", std::string(to_string(spec.mode)) + " is not supported on the " +
                                                         name() + " backend (only protocol)");
  if (spec.memory_bytes < min_memory_bytes())
    return plain_error(
        "field 'limits.memory'",
        std::string("the ") + name() + " backend needs at least " +
            std::to_string(min_memory_bytes() >> 20) + "Mi of guest memory" +
            (kind_ == VmKind::microvm ? " (the Linux guest does not boot in less)" : ""));
  // QEMU's sandbox has a private /tmp into which only the image's directory is bound: a
  // file directly in the host's /tmp cannot be reached from there.
  if (spec.image.rfind('/') == std::strlen("/tmp") && spec.image.starts_with("/tmp/"))
    return plain_error("field 'image'", "a VM image directly in /tmp cannot be reached from the "
                                        "sandbox QEMU runs in: put it in a directory of its own");
  struct stat st {};
  if (stat(spec.image.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return plain_error("field 'image'", std::string("the ") + name() + " backend needs a file: " +
                                            (kind_ == VmKind::microvm
                                                 ? "the function's initramfs (tools/mkinitramfs)"
                                                 : "a PVH ELF unikernel image"));
  if (kind_ == VmKind::unikernel) return check_pvh_elf(spec.image);
  if (auto it = spec.annotations.find(kTransportAnnotation);
      it != spec.annotations.end() && it->second != "virtio" && it->second != "serial")
    return plain_error("field 'annotations.faasvisor.vm.transport'", "expected virtio or serial");

  auto head = read_prefix(spec.image, 6);
  if (!head || *head != "070701")
    return plain_error(
        "field 'image'",
        spec.image + " is not an uncompressed newc initramfs (build it with tools/mkinitramfs)");
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/')
    return plain_error("field 'envProcess'",
                       "the command must be an absolute path inside the initramfs");
  std::vector<std::string> needed{"/init", spec.argv[0]};
  if (spec.mode != FunctionSpec::Mode::protocol) needed.emplace_back(kAdapterInGuest);
  for (const std::string &path : needed) {
    auto mode = cpio_mode(spec.image, std::string_view(path).substr(1));
    if (!mode)
      return plain_error("field 'image'",
                         "cannot read " + spec.image + ": " + mode.error().message());
    if (!S_ISREG(*mode) || (*mode & 0111) == 0)
      return plain_error(path == spec.argv[0] ? "field 'envProcess'" : "field 'image'",
                         path + " is not an executable in " + spec.image +
                             (path == kAdapterInGuest ? " (tools/mkinitramfs --file BUILD/src/faasvisor-adapter)" : ""));
  }
  std::string longest = encode_vm_spec(instance_argv(spec, kAdapterInGuest),
                                       instance_environment(spec, std::string(kLongestInstanceName, 'x')));
  size_t total = std::strlen(kMicrovmCmdline) + std::strlen(" fvio=virtio fvspec=") + longest.size();
  if (total >= kKernelCmdlineMax)
    return plain_error("field 'envVars'", "the command and environment take " +
                                              std::to_string(total) +
                                              " bytes of the kernel command line, more than its " +
                                              std::to_string(kKernelCmdlineMax - 1));
  return {};
}

bool QemuBackend::network_support(std::string *why_not) const {
  if (kind_ == VmKind::microvm) return true;
  *why_not = "a unikernel has no network stack";
  return false;
}

void QemuBackend::settle(FunctionSpec &spec) const {
  if (kind_ != VmKind::microvm) return;
  spec.network.tap = spec.network.egress;  // the guest, not the namespace, owns the address
  if (auto it = spec.annotations.find(kTransportAnnotation); it != spec.annotations.end()) {
    spec.vm_virtio = it->second == "virtio";
    return;
  }
  // The image's headers and names only: a few reads of a file validate() has just read.
  auto mode = cpio_mode(spec.image, kVirtioConsoleModule);
  spec.vm_virtio = mode && *mode != 0;
}

std::vector<std::string> QemuBackend::accelerator_args() const {
  // Under KVM the guest sees the host's CPU (its features, no emulated model to translate to).
  if (host_->use_kvm()) return {"-accel", "kvm", "-cpu", "host"};
  return {"-accel", "tcg,tb-size=" + std::to_string(tb_size_mib())};
}

namespace {
// The instance protocol on a virtserialport (the guest's port 1) of a virtio-serial-device on
// the microvm machine's virtio-mmio transport, whose chardev is QEMU's stdio, the sandbox's
// pipes to the node: a serial port, not a console, so QEMU never drops what the guest sends
// when the pipe is full. COM1 goes to QEMU's stderr, the function's log (a panic's or a
// crash report's last words reach the failure message there). `port` adds options to the
// port device.
std::vector<std::string> virtio_serial_args(std::string_view port) {
  return {"-chardev", "stdio,id=fv", "-device", "virtio-serial-device,max_ports=2", "-device",
          "virtserialport,chardev=fv,nr=1" + std::string(port), "-serial", "file:/proc/self/fd/2"};
}
}  // namespace

// The microVM's devices and boot: virtio (the guest sees /dev/vport0p1, named for vminit),
// or the protocol on COM1 (-serial stdio) for the serial transport.
std::vector<std::string> QemuBackend::microvm_args(const FunctionSpec &spec,
                                                   std::string_view instance_name,
                                                   const net::Lease &network) const {
  bool virtio = spec.vm_virtio;
  std::vector<std::string> args = {"-M", virtio ? kMicrovmMachine : kMicrovmSerialMachine};
  if (virtio) {
    std::vector<std::string> devices = virtio_serial_args(",name=faasvisor");
    args.insert(args.end(), devices.begin(), devices.end());
  } else {
    args.insert(args.end(), {"-serial", "stdio"});
  }
  std::string fvnet;
  if (network.held()) {
    // tap0 of the instance's namespace, bridged there to its veth (faasvisor-net prepare
    // ... tap); a MAC of its own per address, since the node's bridge sees every guest.
    in_addr addr{};
    inet_pton(AF_INET, network.ip().c_str(), &addr);
    const auto *b = reinterpret_cast<const uint8_t *>(&addr.s_addr);
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]);
    args.insert(args.end(), {"-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no", "-device",
                             std::string("virtio-net-device,netdev=net0,mac=") + mac});
    const net::Network *node_net = this->network();
    fvnet = " fvnet=" + network.ip() + "/24," + node_net->gateway();
    for (const std::string &server : node_net->dns()) fvnet += "," + server;
  }
  args.insert(args.end(),
              {"-kernel", host_->kernel(), "-initrd", spec.image, "-append",
               std::string(kMicrovmCmdline) + (virtio ? " fvio=virtio" : " fvio=serial") + fvnet +
                   " fvspec=" + encode_vm_spec(instance_argv(spec, kAdapterInGuest),
                                               instance_environment(spec, instance_name))});
  return args;
}

// The unikernel's devices and boot: the kit's virtio console (unikernel/virtio_console.h) on
// modern virtio-mmio (QEMU 7.2's default is legacy), which microvm names on the guest's
// command line. Its own function, for the unikernel kit's transport.
std::vector<std::string> QemuBackend::unikernel_args(const FunctionSpec &spec) const {
  std::vector<std::string> args = {"-M", kUnikernelMachine, "-global", "virtio-mmio.force-legacy=false"};
  std::vector<std::string> devices = virtio_serial_args("");
  args.insert(args.end(), devices.begin(), devices.end());
  args.insert(args.end(), {"-kernel", spec.image});
  return args;
}

// QEMU runs in a sandbox of the process backend's kind (faasvisor-stem, src/stem/stem.c):
// its own cgroup under the node's node-<pid> subtree, limited to the guest's RAM plus QEMU's
// own cost and to the function's CPU, made and joined by the stem off the loop; its own pid,
// mount, ipc, uts and net namespaces (QEMU needs no network: the guest has none) with the
// host read-only. The stem dies with the node (PR_SET_PDEATHSIG) and QEMU, in the stem's pid
// namespace, with the stem: a SIGKILLed node leaves no QEMU. The stem drops every
// capability before the exec; QEMU stays uid 0 so it can read the images and /dev/kvm.
Result<Launched> QemuBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  std::string why;
  if (!available(&why)) return plain_error("VM backend unavailable", why);
  proc::GoSpec go;
  go.argv = {host_->qemu()};
  auto add = [&go](std::vector<std::string> more) {
    go.argv.insert(go.argv.end(), more.begin(), more.end());
  };
  add(accelerator_args());
  add({"-m", std::to_string(spec.memory_bytes >> 20) + "M", "-smp", "1", "-nodefaults",
       "-no-user-config", "-display", "none", "-no-reboot", "-name", std::string(instance_name)});
  auto lease = take_network(spec);
  if (!lease) return lease.error();
  if (lease->held()) go.netns_name = lease->name();  // QEMU opens tap0 there
  add(kind_ == VmKind::microvm ? microvm_args(spec, instance_name, *lease) : unikernel_args(spec));
  go.env = {kEnv[0]};
  // The image's directory is the sandbox's working directory (a function directory under
  // the host's /tmp is bound into the sandbox's private /tmp this way).
  go.directory = spec.image.substr(0, spec.image.rfind('/'));
  if (go.directory.empty()) go.directory = "/";
  go.uid = 0;
  go.gid = 0;
  go.limits.memory_bytes = spec.memory_bytes + memory_overhead_bytes(spec) + kCgroupSlack;
  go.limits.cpu_millis = spec.cpu_millis;
  go.limits.pids_max = std::max(spec.pids_max, kQemuMinPids);
  std::string message = proc::encode_go(go);

  auto sandbox = spawn_sandbox(cgroups_, stem_path_, instance_name,
                               lease->held() ? network()->netns_dir() : std::string());
  if (!sandbox) return sandbox.error();
  // A fresh pipe takes the whole message (a few KiB: the kernel command line is at most
  // 2 KiB) at once; the stem reads it once its cgroup and namespaces are made.
  ssize_t n = ::write(sandbox->to_instance, message.data(), message.size());
  if (n != static_cast<ssize_t>(message.size())) {
    int err = n < 0 ? errno : EAGAIN;
    discard_sandbox(cgroups_, reaper_, *sandbox);
    return errno_error("write the QEMU command to the sandbox", err);
  }
  sandbox->network = std::move(*lease);
  return sandbox;
}

Result<uint64_t> QemuBackend::memory_usage(const Launched &launched) const {
  // QEMU's share of memory (guest RAM it touched, the translation cache, itself) and the
  // stem's few pages, from the instance's cgroup.
  return sandbox_memory(cgroups_, launched);
}

Status QemuBackend::cleanup(Launched &launched) { return cleanup_stem(cgroups_, launched); }

}  // namespace faasvisor::backend
