/* The instance protocol on a virtio console port: QEMU's virtio-serial-device (virtio device
 * 3) on a virtio-mmio transport, with a virtserialport at port 1 on the node's pipes:
 *
 *   -global virtio-mmio.force-legacy=false -device virtio-serial-device,max_ports=2
 *   -chardev stdio,id=fv -device virtserialport,chardev=fv,nr=1
 *
 * Why a virtserialport and not port 0's virtconsole: QEMU drops what a console port sends
 * when the host side would block (virtio-console.c: "silently dropping console data on
 * EAGAIN"), while a serial port stops the guest's queue until the pipe drains. A port other
 * than 0 needs VIRTIO_CONSOLE_F_MULTIPORT, and with it the control queue; the driver uses
 * only its transmit half, once, to open the port (PORT_OPEN: QEMU sends a multiport guest
 * nothing until then). The data path is one virtqueue pair: port 1's receive queue (4) and
 * transmit queue (5).
 *
 * Receive: 16 buffers of 4 KiB stay with the device (QEMU hands over one read of its
 * chardev, at most 4 KiB, per buffer); reads copy out of them and give each back once
 * emptied. Transmit: the caller's bytes go as they are (one descriptor, no copy) and the
 * write returns when the device has sent them, so the caller may reuse its buffer. Waiting
 * on either queue halts the CPU until the device's interrupt: an idle guest uses no CPU. */
#ifndef FAASVISOR_UNIKERNEL_VIRTIO_CONSOLE_H
#define FAASVISOR_UNIKERNEL_VIRTIO_CONSOLE_H

#include <stddef.h>

/* Looks for a console device among the command line's virtio_mmio.device= entries (before
 * the heap exists: the command line may lie in RAM the heap takes). Returns 1 if found. */
int uk_vconsole_probe(const char *cmdline, size_t len);

/* Brings the device found by uk_vconsole_probe up: queues and buffers from the heap, its
 * interrupt routed, port 1 opened. Returns NULL, or what went wrong. */
const char *uk_vconsole_start(void);

/* Blocks until len bytes have arrived (the port has no end of stream the guest needs). */
void uk_vconsole_read(void *buf, size_t len);

/* Blocks until the device has sent all len bytes. */
void uk_vconsole_write(const void *buf, size_t len);

#endif
