/* faasvisor-vminit: /init of a microVM instance (the microvm backend, src/backend/qemu.cc).
 *
 * The node talks the instance protocol over a virtio serial port (QEMU's virtserialport on
 * virtio-serial-device, a virtio-mmio device of the microvm machine, whose chardev is QEMU's
 * stdio: the node's pipes). The serial port (ttyS0) is only the kernel's console, which QEMU
 * sends to the function's log. With fvio=serial on the kernel command line (the node's
 * "faasvisor.vm.transport": "serial", kept to measure the old path) the protocol runs on
 * ttyS0 instead, as it used to. This agent makes that stream clean and runs the function:
 *   - mounts devtmpfs, proc and a tmpfs /tmp;
 *   - loads the kernel modules of the image (virtio_mmio and virtio_console, with their
 *     dependencies: Debian builds them as modules; the microvm machine describes its
 *     virtio-mmio devices in ACPI tables, which the driver finds);
 *   - virtio: opens the port (/dev/vport0p1, made by devtmpfs once the driver has seen the
 *     host's port); serial: turns the kernel's console output off (it shares ttyS0 with the
 *     protocol) and sets ttyS0 raw: no echo, no CR/LF translation, no signals, 8-bit clean;
 *   - asks the node for the function's secrets (GET_SECRETS, docs/protocol.md) and writes
 *     them as read-only files in a tmpfs at /var/openfaas/secrets;
 *   - runs the function (argv and environment from the kernel command line's fvspec=,
 *     written by the node) with stdin on the port and stdout, stderr on pipes back to it;
 *   - relays the function's stdout to the port frame by frame, and sends each stderr line as
 *     a LOG frame between frames, so the function's log reaches the node on the one stream;
 *   - when the function exits, says how in a LOG frame and reboots: the kernel's reboot=t
 *     triple-faults and QEMU, run with -no-reboot, exits. A panic does the same (panic=-1).
 * Static, no allocation beyond fixed buffers; it never returns (pid 1 must not exit). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "faasvisor/frame.h"
#include "../util/write_all.h"

#define SPEC_MAX 4096
#define MAX_ARGS 64
#define MAX_ENV 128
#define LOG_LINE_MAX 1024
/* The node's virtserialport: the first port (nr 1) of the first virtio-serial device. */
#define VIRTIO_PORT "/dev/vport0p1"
#define VIRTIO_PORT_WAIT_MS 20000

static int g_tty = 1; /* /dev/console (ttyS0) until the protocol's port is open */
static char g_cmdline[SPEC_MAX * 3 + 2048];
/* In virtio mode, until the port is open, lines go to the console (the function's log) as
 * plain text rather than as LOG frames. */
static int g_plain;

/* The console: a failed write has nowhere to be reported, so its result is not looked at. */
static void write_tty(const void *data, size_t len) { (void)fv_write_all(g_tty, data, len); }

/* One LOG frame on the protocol stream (only between frames). */
static void send_log(const char *line, size_t len) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  if (len > LOG_LINE_MAX) len = LOG_LINE_MAX;
  if (g_plain) {
    write_tty(line, len);
    write_tty("\n", 1);
    return;
  }
  fv_frame_header_write(header, FV_FRAME_LOG, (uint32_t)len);
  write_tty(header, sizeof header);
  write_tty(line, len);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  send_log(line, (size_t)n);
}

static void halt_now(void) {
  sync();
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

/* Fatal before the function runs: a LOG frame (the stream is clean from the start), then
 * the end of the VM; the node reports the instance as failed with this line in its log. */
static void die(const char *what) {
  say("faasvisor-vminit: %s: %s", what, strerror(errno));
  halt_now();
}

/* faasvisor.network=egress (docs/network.md): the node puts " fvnet=IP/PREFIX,GATEWAY[,DNS...]"
 * on the command line and a virtio-net device in the VM (its TAP is bridged to the
 * instance's veth in the instance's namespace); the image holds virtio_net (tools/mkinitramfs
 * --module virtio_net). eth0 gets the address and the default route, /etc/resolv.conf the
 * nameservers. Without fvnet the guest has loopback only. */
static void set_ipv4(int sock, unsigned long request, const char *ifname, in_addr_t addr, const char *what) {
  struct ifreq req;
  memset(&req, 0, sizeof req);
  snprintf(req.ifr_name, IFNAMSIZ, "%s", ifname);
  struct sockaddr_in *sin = (struct sockaddr_in *)&req.ifr_addr;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = addr;
  if (ioctl(sock, request, &req) < 0) die(what);
}

static void bring_up(int sock, const char *ifname) {
  struct ifreq req;
  memset(&req, 0, sizeof req);
  snprintf(req.ifr_name, IFNAMSIZ, "%s", ifname);
  if (ioctl(sock, SIOCGIFFLAGS, &req) < 0) die("SIOCGIFFLAGS");
  req.ifr_flags = (short)(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(sock, SIOCSIFFLAGS, &req) < 0) die("SIOCSIFFLAGS");
}

static void configure_network(const char *cmdline) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) die("socket");
  bring_up(sock, "lo");
  const char *at = strstr(cmdline, " fvnet=");
  if (at == NULL) {
    close(sock);
    return;
  }
  char spec[256];
  snprintf(spec, sizeof spec, "%.*s", (int)strcspn(at + 7, " \n"), at + 7);
  char *fields[8] = {0};
  int n = 0;
  for (char *f = strtok(spec, ","); f != NULL && n < 8; f = strtok(NULL, ",")) fields[n++] = f;
  char *slash = n >= 2 ? strchr(fields[0], '/') : NULL;
  if (slash == NULL) { errno = EINVAL; die("fvnet= on the command line"); }
  *slash = '\0';
  int prefix = atoi(slash + 1);
  in_addr_t ip = inet_addr(fields[0]), gateway = inet_addr(fields[1]);
  in_addr_t mask = prefix <= 0 ? 0 : htonl(~0u << (32 - prefix));
  /* virtio_net registers eth0 while its module loads; give a slow probe a moment. */
  for (int i = 0; i < 200 && if_nametoindex("eth0") == 0; ++i) {
    struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  set_ipv4(sock, SIOCSIFADDR, "eth0", ip, "set eth0's address (is virtio_net in the image?)");
  set_ipv4(sock, SIOCSIFNETMASK, "eth0", mask, "set eth0's netmask");
  bring_up(sock, "eth0");
  struct rtentry route;
  memset(&route, 0, sizeof route);
  ((struct sockaddr_in *)&route.rt_dst)->sin_family = AF_INET;
  ((struct sockaddr_in *)&route.rt_genmask)->sin_family = AF_INET;
  struct sockaddr_in *gw = (struct sockaddr_in *)&route.rt_gateway;
  gw->sin_family = AF_INET;
  gw->sin_addr.s_addr = gateway;
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  if (ioctl(sock, SIOCADDRT, &route) < 0) die("add the default route");
  close(sock);
  mkdir("/etc", 0755);
  int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("write /etc/resolv.conf");
  for (int i = 2; i < n; ++i) {
    char line[64];
    int len = snprintf(line, sizeof line, "nameserver %s\n", fields[i]);
    if (write(fd, line, (size_t)len) != len) die("write /etc/resolv.conf");
  }
  close(fd);
}

/* The kernel modules tools/mkinitramfs put in the image, in dependency order. */
static char g_loaded[512];
static void load_modules(void) {
  static char list[4096];
  char *loaded = g_loaded;
  size_t loaded_len = 0;
  int fd = open("/lib/modules/load", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, list, sizeof list - 1);
  close(fd);
  if (n <= 0) return;
  list[n] = '\0';
  for (char *line = strtok(list, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    const char *base = strrchr(line, '/') != NULL ? strrchr(line, '/') + 1 : line;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "."), base);
    int mod = open(line, O_RDONLY | O_CLOEXEC);
    if (mod < 0) die(line);
    if (syscall(SYS_finit_module, mod, "", 0) < 0 && errno != EEXIST) die(line);
    close(mod);
    int w = snprintf(loaded + loaded_len, sizeof g_loaded - loaded_len, "%s%s",
                     loaded_len ? ", " : "", name);
    if (w > 0 && (size_t)w < sizeof g_loaded - loaded_len) loaded_len += (size_t)w;
  }
}

/* The virtio port appears once the driver has probed the device and the host has announced
 * the port (a control message, handled after finit_module returns): wait for its node, and
 * for the driver to list the port (ENXIO until then: the node is made first). */
static int open_virtio_port(void) {
  struct timespec step = {0, 1000000};
  for (int waited = 0; waited < VIRTIO_PORT_WAIT_MS; waited++) {
    int fd = open(VIRTIO_PORT, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0 || (errno != ENOENT && errno != ENXIO)) return fd;
    nanosleep(&step, NULL);
  }
  errno = ENOENT;
  return -1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static void read_cmdline(void) {
  int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open /proc/cmdline");
  ssize_t n = read(fd, g_cmdline, sizeof g_cmdline - 1);
  close(fd);
  if (n <= 0) die("read /proc/cmdline");
  g_cmdline[n] = '\0';
}

/* fvspec=<percent-encoded> from the kernel command line, decoded into spec: argv entries,
 * NUL-terminated, then an empty entry, then "NAME=value" entries. Returns its length. */
static size_t read_spec(char *spec, size_t cap) {
  char *at = strstr(g_cmdline, " fvspec=");
  if (at == NULL) {
    errno = ENOENT;
    die("no fvspec= on the kernel command line");
  }
  at += strlen(" fvspec=");
  size_t len = 0;
  while (*at != '\0' && *at != ' ' && *at != '\n' && len < cap) {
    if (at[0] == '%' && hexval(at[1]) >= 0 && hexval(at[2]) >= 0) {
      spec[len++] = (char)(hexval(at[1]) * 16 + hexval(at[2]));
      at += 3;
    } else {
      spec[len++] = *at++;
    }
  }
  return len;
}

static int set_raw(int fd) {
  struct termios t;
  if (tcgetattr(fd, &t) < 0) return -1;
  cfmakeraw(&t);
  t.c_cflag |= CLOCAL | CREAD;
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  cfsetispeed(&t, B115200);
  cfsetospeed(&t, B115200);
  return tcsetattr(fd, TCSANOW, &t);
}

/* The function's stdout, relayed to the tty whole frames at a time, so LOG frames can go
 * between them. A stream that stops parsing as frames is passed on as is (the node will
 * name the protocol error) and no more LOG frames are inserted. */
static struct {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  size_t header_len;
  uint64_t remaining; /* payload bytes of the current frame still to relay */
  int passthrough;
} g_out;

static int at_frame_boundary(void) {
  return !g_out.passthrough && g_out.header_len == 0 && g_out.remaining == 0;
}

static void relay_out(const uint8_t *p, size_t n) {
  while (n > 0) {
    if (g_out.passthrough) {
      write_tty(p, n);
      return;
    }
    if (g_out.remaining > 0) {
      size_t take = n < g_out.remaining ? n : (size_t)g_out.remaining;
      write_tty(p, take);
      g_out.remaining -= take;
      p += take;
      n -= take;
      continue;
    }
    size_t take = FV_FRAME_HEADER_SIZE - g_out.header_len;
    if (take > n) take = n;
    memcpy(g_out.header + g_out.header_len, p, take);
    g_out.header_len += take;
    p += take;
    n -= take;
    if (g_out.header_len < FV_FRAME_HEADER_SIZE) return;
    struct fv_frame_header h;
    if (fv_frame_header_parse(g_out.header, FV_FRAME_HEADER_SIZE, UINT32_MAX, &h) != FV_OK)
      g_out.passthrough = 1;
    else
      g_out.remaining = h.length;
    write_tty(g_out.header, FV_FRAME_HEADER_SIZE);
    g_out.header_len = 0;
  }
}

static struct {
  char buf[LOG_LINE_MAX * 4];
  size_t len;
} g_err;

/* Sends the complete lines of the function's stderr (all of it when flushing). */
static void flush_err(int all) {
  size_t start = 0;
  for (size_t i = 0; i < g_err.len; i++) {
    if (g_err.buf[i] != '\n') continue;
    send_log(g_err.buf + start, i - start);
    start = i + 1;
  }
  if (all && start < g_err.len) {
    send_log(g_err.buf + start, g_err.len - start);
    start = g_err.len;
  }
  if (start == 0 && g_err.len == sizeof g_err.buf) { /* one over-long line: cut it */
    send_log(g_err.buf, g_err.len);
    start = g_err.len;
  }
  memmove(g_err.buf, g_err.buf + start, g_err.len - start);
  g_err.len -= start;
}

/* ---- secrets ---- */

#define SECRETS_DIR "/var/openfaas/secrets"

static void read_tty_exact(void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = read(g_tty, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EPIPE;
      die("read the node's SECRETS frame");
    }
    p += n;
    len -= (size_t)n;
  }
}

/* The function's secrets, as the process and container backends present them: one file
 * per secret, 0400, in a tmpfs at /var/openfaas/secrets that is read-only once written. The
 * node sends them only when asked, after this agent has made ttyS0 raw (bytes sent earlier
 * would meet the tty's echo and line editing). Without secrets nothing is mounted. */
static void install_secrets(void) {
  /* The bss page-faults in only as far as the frame reaches. */
  static uint8_t payload[FV_SECRETS_PAYLOAD_MAX];
  static struct fv_secrets_view view;
  uint8_t header[FV_FRAME_HEADER_SIZE];
  fv_frame_header_write(header, FV_FRAME_GET_SECRETS, 0);
  write_tty(header, sizeof header);
  read_tty_exact(header, sizeof header);
  struct fv_frame_header h;
  if (fv_frame_header_parse(header, sizeof header, FV_SECRETS_PAYLOAD_MAX, &h) != FV_OK ||
      h.type != FV_FRAME_SECRETS) {
    errno = EPROTO;
    die("expected a SECRETS frame from the node");
  }
  read_tty_exact(payload, h.length);
  if (fv_secrets_decode(payload, h.length, &view) != FV_OK) {
    errno = EPROTO;
    die("malformed SECRETS frame");
  }
  if (view.count > 0) {
    mkdir("/var", 0755);
    mkdir("/var/openfaas", 0755);
    mkdir(SECRETS_DIR, 0755);
    if (mount("tmpfs", SECRETS_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0)
      die("mount " SECRETS_DIR);
    int dir = open(SECRETS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) die("open " SECRETS_DIR);
    for (uint32_t i = 0; i < view.count; i++) {
      char name[FV_SECRET_NAME_MAX + 1]; /* valid: no '/', never "." or ".." (decode checked) */
      memcpy(name, view.entries[i].name.ptr, view.entries[i].name.len);
      name[view.entries[i].name.len] = '\0';
      int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
      if (fd < 0 || fv_write_all(fd, view.entries[i].value.ptr, view.entries[i].value.len) < 0)
        die("write a secret file");
      close(fd);
    }
    close(dir);
    if (mount(NULL, SECRETS_DIR, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
      die("make " SECRETS_DIR " read-only");
  }
  memset(payload, 0, h.length); /* the files are the only copy left */
}

/* 127.0.0.1 in the guest: an http-mode function (faasvisor-adapter, docs/modes.md) listens
 * there. The guest has no other network device. */
static void loopback_up(void) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return;
  struct ifreq req;
  memset(&req, 0, sizeof req);
  strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sock, SIOCGIFFLAGS, &req) == 0) {
    req.ifr_flags = (short)(req.ifr_flags | IFF_UP | IFF_RUNNING);
    ioctl(sock, SIOCSIFFLAGS, &req);
  }
  close(sock);
}

int main(void) {
  set_raw(g_tty); /* early, so even a failure's LOG frame on ttyS0 reaches the node intact */
  /* The kernel opened /dev/console (ttyS0) as fds 0-2 from the initramfs's /dev; devtmpfs
   * replaces that /dev with the real device nodes. */
  mkdir("/dev", 0755);
  mkdir("/proc", 0555);
  mkdir("/tmp", 01777);
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
    die("mount /dev");
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    die("mount /proc");
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0) die("mount /tmp");
  loopback_up();
  read_cmdline();
  int virtio = strstr(g_cmdline, " fvio=serial") == NULL;
  g_plain = virtio;
  if (!virtio) {
    /* From here on the kernel prints nothing on the console: ttyS0 is the protocol's. A
     * panic still does (it turns the console back on), and then QEMU exits. Level 0
     * silences even KERN_EMERG ("reboot: Restarting system" would otherwise follow the
     * function's last frame); klogctl's CONSOLE_OFF, the fallback, keeps level 1. */
    int printk = open("/proc/sys/kernel/printk", O_WRONLY | O_CLOEXEC);
    if (printk < 0 || write(printk, "0 4 0 0", 7) != 7)
      klogctl(6 /* SYSLOG_ACTION_CONSOLE_OFF */, NULL, 0);
    if (printk >= 0) close(printk);
  }
  load_modules();

  if (virtio) {
    int port = open_virtio_port();
    if (port < 0)
      die("open the virtio port " VIRTIO_PORT " (is virtio_console in the image? tools/mkinitramfs "
          "adds it)");
    g_tty = port;
    g_plain = 0;
  } else {
    g_tty = open("/dev/ttyS0", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (g_tty < 0) g_tty = 1;
    if (set_raw(g_tty) < 0) die("set ttyS0 raw");
    tcflush(g_tty, TCIOFLUSH);
  }
  if (g_loaded[0] != '\0') say("faasvisor-vminit: loaded kernel modules: %s", g_loaded);
  configure_network(g_cmdline);
  install_secrets();

  static char spec[SPEC_MAX + 1];
  size_t spec_len = read_spec(spec, SPEC_MAX);
  spec[spec_len] = '\0';
  char *argv[MAX_ARGS + 1];
  char *envp[MAX_ENV + 1];
  int argc = 0, envc = 0, in_env = 0;
  for (size_t i = 0; i < spec_len;) {
    char *entry = spec + i;
    size_t len = strlen(entry);
    if (len == 0 && !in_env) {
      in_env = 1;
    } else if (len > 0) {
      if (!in_env && argc < MAX_ARGS)
        argv[argc++] = entry;
      else if (in_env && envc < MAX_ENV)
        envp[envc++] = entry;
    }
    i += len + 1;
  }
  argv[argc] = NULL;
  envp[envc] = NULL;
  if (argc == 0) {
    errno = EINVAL;
    die("fvspec= names no command");
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");

  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe2");
  /* Room for a large frame in the pipe: fewer, larger splices to the port. */
  if (virtio) fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (dup2(g_tty, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) _exit(127);
    if (chdir("/") < 0) _exit(127);
    execve(argv[0], argv, envp);
    dprintf(2, "faasvisor-vminit: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);

  struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {sfd, POLLIN, 0}};
  int status = 0;
  int exited = 0;
  static uint8_t buf[65536];
  while (!exited || fds[0].fd >= 0 || fds[1].fd >= 0) {
    /* Stderr waits while a frame is half relayed, and while its buffer is full. */
    fds[1].events = g_err.len < sizeof g_err.buf ? POLLIN : 0;
    if (poll(fds, 3, exited ? 100 : -1) == 0) break; /* exited; a grandchild holds a pipe */
    if (fds[2].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
      int st;
      pid_t pid;
      while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        if (pid == child) status = st, exited = 1;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n;
      if (virtio && !g_out.passthrough && g_out.remaining > 0) {
        /* A frame's payload goes from the pipe to the port without a copy through us: the
         * driver hands the pipe's pages to the host as one buffer chain per splice. */
        size_t take = g_out.remaining < (1u << 20) ? (size_t)g_out.remaining : (1u << 20);
        n = splice(out[0], NULL, g_tty, NULL, take, SPLICE_F_MOVE);
        if (n > 0) g_out.remaining -= (uint64_t)n;
      } else {
        n = read(out[0], buf, sizeof buf);
        if (n > 0) relay_out(buf, (size_t)n);
      }
      if (n == 0 || (n < 0 && errno != EINTR)) fds[0].fd = -1;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(err[0], g_err.buf + g_err.len, sizeof g_err.buf - g_err.len);
      if (n > 0)
        g_err.len += (size_t)n;
      else if (n == 0 || errno != EINTR)
        fds[1].fd = -1;
    }
    if (at_frame_boundary() && g_err.len > 0) flush_err(fds[1].fd < 0);
  }
  if (at_frame_boundary()) {
    flush_err(1);
    if (WIFEXITED(status))
      say("faasvisor-vminit: %s exited with status %d", argv[0], WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
      say("faasvisor-vminit: %s was killed by signal %s", argv[0], sigabbrev_np(WTERMSIG(status)));
  }
  halt_now();
  return 0;
}
