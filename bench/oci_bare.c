/* oci_bare: cold starts of a container by its OCI runtime alone, the reference the node's
 * cold start is measured against (bench/containers).
 *
 * Each round: three pipes for stdio (as the node gives them), posix_spawn of the command,
 * then wait for the READY frame on the container's stdout, write one REQUEST (POST /, a
 * 5-byte body) and read its RESPONSE: the time from spawn to READY and to the RESPONSE is
 * printed. Then stdin is closed (the function exits at end of stream) and the runtime is
 * reaped, untimed. Any argument equal to @ID@ is replaced by a fresh container id.
 *
 * --hide-unified: first (once, untimed) enter a private mount namespace where the hybrid
 * host's empty cgroup2 mount /sys/fs/cgroup/unified is gone: crun refuses hybrid cgroups,
 * and the node does the same once at start.
 * --sealed-copy: exec the runtime from a sealed memfd copy of it, made once, untimed (the
 * node does this too: crun and runc then skip copying themselves on every start).
 *
 *   oci_bare [-n ROUNDS] [--hide-unified] [--sealed-copy] -- RUNTIME ARGS... (@ID@: the id)
 * Output: one line per round "ready_us=X response_us=Y", then
 *   oci_bare rounds=N ready_p50_us=X response_p50_us=Y response_min_us=Z */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_io.h"

#include "faasvisor/frame.h"

extern char **environ;

enum { kMaxRounds = 10000, kMaxArgs = 64 };

/* Reads one whole frame; returns its type, or -1. */
static int read_frame(int fd, uint8_t *payload, size_t cap) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  struct fv_frame_header h;
  if (read_exact(fd, header, sizeof header) < 0) return -1;
  if (fv_frame_header_parse(header, sizeof header, (uint32_t)cap, &h) != FV_OK) return -1;
  if (read_exact(fd, payload, h.length) < 0) return -1;
  return h.type;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* A sealed memfd copy of the binary at path (crun and runc then skip copying themselves,
 * as they do when the node starts them); returns "/proc/self/fd/N" in buf. */
static const char *sealed_copy(const char *path, char *buf, size_t size) {
  int src = open(path, O_RDONLY | O_CLOEXEC);
  int fd = memfd_create("runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  struct stat st;
  if (src < 0 || fd < 0 || fstat(src, &st) < 0) perror("oci_bare: sealed copy"), exit(1);
  for (off_t done = 0; done < st.st_size;) {
    ssize_t n = sendfile(fd, src, NULL, (size_t)(st.st_size - done));
    if (n <= 0) perror("oci_bare: sendfile"), exit(1);
    done += n;
  }
  close(src);
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
    perror("oci_bare: seal"), exit(1);
  snprintf(buf, size, "/proc/self/fd/%d", fd);
  return buf;
}

static void hide_unified(void) {
  if (unshare(CLONE_NEWNS) < 0) perror("oci_bare: unshare"), exit(1);
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) perror("oci_bare: make / slave"), exit(1);
  if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) < 0) perror("oci_bare: umount unified"), exit(1);
}

int main(int argc, char **argv) {
  long rounds = 20;
  int i = 1, sealed = 0;
  static const char usage[] = "usage: oci_bare [-n ROUNDS] [--hide-unified] [--sealed-copy] -- COMMAND...\n";
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) rounds = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--hide-unified") == 0) hide_unified();
    else if (strcmp(argv[i], "--sealed-copy") == 0) sealed = 1;
    else return fprintf(stderr, usage), 2;
  }
  if (i + 1 >= argc || rounds < 1 || rounds > kMaxRounds || argc - i > kMaxArgs) return fprintf(stderr, usage), 2;
  char **cmd = argv + i + 1;
  int ncmd = argc - i - 1;
  char exec_path[64];
  const char *binary = sealed ? sealed_copy(cmd[0], exec_path, sizeof exec_path) : cmd[0];
  signal(SIGPIPE, SIG_IGN);

  static uint64_t ready_ns[kMaxRounds], resp_ns[kMaxRounds];
  static uint8_t buf[1 << 16];
  uint8_t request[256];
  static struct fv_request_view req;
  req.method = (struct fv_str){"POST", 4};
  req.path = (struct fv_str){"/", 1};
  req.body = (struct fv_str){"hello", 5};
  long encoded = fv_request_encode(request, sizeof request, &req);
  if (encoded < 0) return fprintf(stderr, "oci_bare: encode failed\n"), 1;
  size_t request_len = (size_t)encoded;

  for (long r = 0; r < rounds; r++) {
    char id[64];
    snprintf(id, sizeof id, "bare-%d-%ld", (int)getpid(), r);
    char *args[kMaxArgs + 1];
    for (int a = 0; a < ncmd; a++) args[a] = strcmp(cmd[a], "@ID@") == 0 ? id : cmd[a];
    args[ncmd] = NULL;
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) return perror("oci_bare: pipe2"), 1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_USEVFORK);
    uint64_t t0 = now_ns();
    pid_t pid;
    int rc = posix_spawn(&pid, binary, &fa, &attr, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    if (rc != 0) return fprintf(stderr, "oci_bare: spawn %s: %s\n", args[0], strerror(rc)), 1;
    int type = read_frame(out[0], buf, sizeof buf);
    uint64_t t1 = now_ns();
    if (type != FV_FRAME_READY) return fprintf(stderr, "oci_bare: no READY from %s (round %ld)\n", args[0], r), 1;
    if (write(in[1], request, request_len) != (ssize_t)request_len) return perror("oci_bare: write"), 1;
    type = read_frame(out[0], buf, sizeof buf);
    uint64_t t2 = now_ns();
    if (type != FV_FRAME_RESPONSE) return fprintf(stderr, "oci_bare: no RESPONSE (round %ld)\n", r), 1;
    close(in[1]);
    while (read(out[0], buf, sizeof buf) > 0) {
    }
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fprintf(stderr, "oci_bare: round %ld: the runtime ended with wait status %d\n", r, status);
    ready_ns[r] = t1 - t0;
    resp_ns[r] = t2 - t0;
    printf("ready_us=%.0f response_us=%.0f\n", (double)ready_ns[r] / 1e3, (double)resp_ns[r] / 1e3);
    fflush(stdout);
  }
  qsort(ready_ns, (size_t)rounds, sizeof ready_ns[0], cmp_u64);
  qsort(resp_ns, (size_t)rounds, sizeof resp_ns[0], cmp_u64);
  printf("oci_bare rounds=%ld ready_p50_us=%.0f response_p50_us=%.0f response_min_us=%.0f\n", rounds,
         (double)ready_ns[(rounds - 1) / 2] / 1e3, (double)resp_ns[(rounds - 1) / 2] / 1e3, (double)resp_ns[0] / 1e3);
  return 0;
}
