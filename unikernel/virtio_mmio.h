/* The virtio-mmio transport (virtio 1.x, section 4.2; "version 2" of the register layout):
 * finding devices, bringing one up, its queues and its interrupt.
 *
 * Discovery: QEMU's microvm machine, booting a kernel with -kernel, appends one
 * "virtio_mmio.device=512@0xfeb00e00:12" per populated transport to the kernel command line
 * (auto-kernel-cmdline, on by default), as Linux and Firecracker spell it: the register
 * window's size, its base and its interrupt (a GSI: an I/O APIC pin). The unikernel reads
 * the PVH command line for them rather than assume microvm's fixed layout.
 *
 * Only modern devices: QEMU 7.2's virtio-mmio is legacy (version 1) unless started with
 * -global virtio-mmio.force-legacy=false, and a legacy device is refused with a message. */
#ifndef FAASVISOR_UNIKERNEL_VIRTIO_MMIO_H
#define FAASVISOR_UNIKERNEL_VIRTIO_MMIO_H

#include <stddef.h>
#include <stdint.h>

#include "virtqueue.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UK_VIRTIO_MAX_DEVICES 8u
#define UK_VIRTIO_ID_CONSOLE 3u

struct uk_virtio_mmio_slot {
  uint64_t base;
  uint64_t size;
  uint32_t irq;
};

/* Parses every virtio_mmio.device=<size>@<base>:<irq>[:<id>] in a command line of at most
 * len bytes (it may end early at a NUL); size takes K, M or G. Returns how many were stored
 * in out (at most max); malformed entries are skipped. Pure: host-tested. */
size_t uk_virtio_mmio_parse(const char *cmdline, size_t len, struct uk_virtio_mmio_slot *out,
                            size_t max);

struct uk_virtio_dev {
  uintptr_t base;
  uint32_t irq;
};

/* The device id at a transport window (0: none), or -1 when the window holds no virtio-mmio
 * transport. */
int uk_virtio_device_id(uintptr_t base);

/* Resets the device and negotiates features: the device must offer every bit of want
 * (VIRTIO_F_VERSION_1 is added); only want is accepted. Returns NULL, or what went wrong. */
const char *uk_virtio_start(const struct uk_virtio_dev *dev, uint64_t want);

/* Tells the device where queue index lives and enables it. Returns NULL, or what went
 * wrong (the device has no such queue, or a smaller one). */
const char *uk_virtio_queue(const struct uk_virtio_dev *dev, uint32_t index, const struct uk_vq *vq);

/* DRIVER_OK: the device may use its queues from now on. */
void uk_virtio_ready(const struct uk_virtio_dev *dev);

/* Tells the device that queue index has new buffers. */
void uk_virtio_notify(const struct uk_virtio_dev *dev, uint32_t index);

/* Acknowledges every pending interrupt cause, which lowers the device's interrupt line. A
 * driver acknowledges before it looks at its queues a last time and halts: what the device
 * returns after that raises the line again (the I/O APIC pin is edge-triggered). */
void uk_virtio_ack_interrupt(const struct uk_virtio_dev *dev);

#ifdef __cplusplus
}
#endif

#endif
