/* The handshake between a pooled stem (src/stem/stem.c, GO mode adopt) and a template's
 * child (src/template/template.c) that joins it, on the abstract unix socket
 * ADOPT_SOCKET_NAME of the stem's network namespace (SOCK_SEQPACKET):
 *   stem -> child: struct adopt_offer, with SCM_RIGHTS: the instance's stdin, stdout,
 *                  stderr, then `cgroups` cgroup.procs files (opened by the stem, writable:
 *                  the child writes "0" to each to move itself into the instance's cgroups);
 *   (the child then reads the start message from the instance's stdin: u32 magic
 *   ADOPT_START_MAGIC, u32 length, the instance's name; and forks the function)
 *   function -> stem: int32 its pid in the stem's pid namespace;
 *   child -> stem:  int32 the function's wait status, once it has ended.
 * Shared by C programs only: no dependency beyond the C library. */
#ifndef FAASVISOR_STEM_ADOPT_H
#define FAASVISOR_STEM_ADOPT_H

#include <stdint.h>

/* Leading NUL: the abstract namespace (sizeof - 1 bytes are the address). */
#define ADOPT_SOCKET_NAME "\0faasvisor-adopt"
#define ADOPT_MAGIC 0x44415646u /* "FVAD" */
#define ADOPT_START_MAGIC 0x54535646u /* "FVST" */
#define ADOPT_MAX_NAME 255
#define ADOPT_MAX_CGROUPS 8
/* How long the stem waits for a template's child to connect, and the child for the stem to
 * listen (a boot then fails fast). */
#define ADOPT_TIMEOUT_MS 3000

struct adopt_offer {
  uint32_t magic;
  uint32_t cgroups;
};

#endif
