/* What the unikernel's parts share: the heap, logging as LOG frames, and leaving the VM. */
#ifndef FAASVISOR_UNIKERNEL_KERNEL_H
#define FAASVISOR_UNIKERNEL_KERNEL_H

#include <stddef.h>

#include "heap.h"

/* Exit codes beyond platform.h's FV_EXIT_*: a CPU exception or a corrupted heap. */
#define UK_EXIT_CRASH 3

/* All RAM the guest has left after its image: frame buffers come from here. */
extern struct uk_heap uk_heap;

/* Writes one LOG frame whose text is the concatenation of parts[0..count). The serial line
 * carries the protocol, so diagnostics must be frames, never raw text. */
void uk_log(const char *const *parts, size_t count);

/* Ends the VM. With QEMU's isa-debug-exit (at its default port 0x501, or at 0xf4) QEMU
 * exits with status code * 2 + 1; Firecracker stops on the i8042 reset that follows; else
 * a triple fault ends QEMU when it runs with -no-reboot. */
_Noreturn void uk_exit(int code);

#endif
