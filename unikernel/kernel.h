/* What the unikernel's parts share: the heap, interrupts, logging, and leaving the VM. */
#ifndef FAASVISOR_UNIKERNEL_KERNEL_H
#define FAASVISOR_UNIKERNEL_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "heap.h"

/* Exit codes beyond platform.h's FV_EXIT_*: a CPU exception or a corrupted heap. */
#define UK_EXIT_CRASH 3

/* All RAM the guest has left after its image: frame buffers come from here. */
extern struct uk_heap uk_heap;

/* Writes one LOG frame whose text is the concatenation of parts[0..count) on the protocol's
 * stream, which carries nothing but frames. */
void uk_log(const char *const *parts, size_t count);

/* A report that must reach the node even when the protocol's stream is cut mid-frame (a CPU
 * exception, too little RAM): a text line on COM1, which the node keeps as the function's
 * log, while the protocol runs on the virtio console; a LOG frame while it runs on COM1. */
void uk_report(const char *const *parts, size_t count);

/* The protocol's byte stream (platform.c): the virtio console when the command line names
 * one, else COM1. uk_stream_probe runs before the heap exists (the command line may lie in
 * RAM the heap takes); uk_stream_start then brings the virtio console up: NULL, or what
 * went wrong. */
void uk_stream_probe(const char *cmdline, size_t len);
const char *uk_stream_start(void);
int uk_stream_is_virtio(void);

/* Interrupt vectors: each only ends a halt (io.h); the code that halted looks at its device. */
#define UK_SERIAL_VECTOR 0x30
#define UK_VIRTIO_VECTOR 0x31

/* Routes I/O APIC pin to vector on this CPU, edge-triggered, active high, unmasked. Returns
 * 0, or -1 when the I/O APIC has no such pin. */
int uk_irq_route(uint32_t pin, uint8_t vector);

/* Ends the VM. With QEMU's isa-debug-exit (at its default port 0x501, or at 0xf4) QEMU
 * exits with status code * 2 + 1; Firecracker stops on the i8042 reset that follows; else
 * a triple fault ends QEMU when it runs with -no-reboot. */
_Noreturn void uk_exit(int code);

#endif
