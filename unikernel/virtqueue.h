/* Split virtqueues (virtio 1.x, section 2.6), the driver's side: the descriptor table, the
 * available ring the driver fills and the used ring the device returns buffers on.
 *
 * Each buffer is one descriptor (no chains, no indirect tables): the console driver gives
 * the device whole receive buffers and whole runs of bytes to send. Free descriptors are
 * chained through their next fields.
 *
 * Notifications both ways follow VIRTIO_F_EVENT_IDX (2.6.7, 2.6.10): the driver asks for an
 * interrupt only once the used ring reaches an index it names (uk_vq_interrupt_after), and
 * tells the device of new buffers only when the device has said it has run out of them
 * (uk_vq_must_notify). That is what lets a reader sleep through 16 receive buffers instead
 * of waking for each.
 *
 * Freestanding, with no device access: unikernel/tests/virtqueue_test.cc plays the device
 * on host memory. One CPU and no interrupt handlers touch a queue, so the only ordering
 * that matters is against the device (another host thread under QEMU): x86 keeps stores in
 * order and loads in order, so a compiler barrier between filling an entry and publishing
 * its index is enough, and likewise between reading an index and its entry; a store that
 * must be seen before a later load (an event index, then the other side's index) needs a
 * full fence. */
#ifndef FAASVISOR_UNIKERNEL_VIRTQUEUE_H
#define FAASVISOR_UNIKERNEL_VIRTQUEUE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UK_VQ_DESC_F_NEXT 1u
#define UK_VQ_DESC_F_WRITE 2u /* the device writes the buffer (receive) */

struct uk_vq_desc {
  uint64_t addr; /* guest physical = virtual: the unikernel maps memory 1:1 */
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct uk_vq_used_elem {
  uint32_t id;  /* the descriptor the device has finished with */
  uint32_t len; /* bytes it wrote into it */
};

struct uk_vq {
  volatile struct uk_vq_desc *desc;
  /* The available ring: flags, idx (free-running: the slot is idx % size), ring[size], then
   * used_event (the driver's: interrupt me when the used index passes this). */
  volatile uint16_t *avail;
  /* The used ring: flags, idx, then used_ring[size], then avail_event (the device's:
   * notify me when the available index passes this). */
  volatile uint16_t *used;
  volatile struct uk_vq_used_elem *used_ring;
  volatile uint16_t *used_event;
  volatile uint16_t *avail_event;
  uint16_t size;       /* entries: a power of 2 */
  uint16_t free_head;  /* first free descriptor */
  uint16_t free_count; /* descriptors not with the device */
  uint16_t avail_idx;  /* the driver's copy of avail->idx */
  uint16_t last_used;  /* the next used entry to take */
};

/* Bytes of memory a queue of size entries needs (16-byte aligned: the descriptor table's
 * alignment; the rings need 2 and 4). */
size_t uk_vq_bytes(uint16_t size);

/* Lays the queue out in memory (uk_vq_bytes(size) bytes, 16-byte aligned), zeroing it.
 * size must be a power of 2 from 1 to 32768. Returns 0, or -1 for a bad size. */
int uk_vq_init(struct uk_vq *vq, uint16_t size, void *memory);

/* Gives the device one buffer and publishes it. Returns its descriptor id, or -1 when every
 * descriptor is with the device. */
int uk_vq_add(struct uk_vq *vq, const void *buf, uint32_t len, uint16_t flags);

/* Descriptors not with the device. */
static inline uint16_t uk_vq_free(const struct uk_vq *vq) { return vq->free_count; }

/* Whether the device must be notified of the buffers added since its available index was
 * old_avail_idx (vq->avail_idx before them): whether it asked to hear of one of them. */
int uk_vq_must_notify(const struct uk_vq *vq, uint16_t old_avail_idx);

/* Asks the device to interrupt once count more buffers (at least 1) have been returned than
 * the driver has taken. The device may already have returned them: look at the ring after
 * this and before halting. */
void uk_vq_interrupt_after(struct uk_vq *vq, uint16_t count);

/* Whether the device has returned a buffer not yet taken. */
int uk_vq_has_used(const struct uk_vq *vq);

/* Takes the next buffer the device has returned, freeing its descriptor: its id, with the
 * bytes the device wrote in *len (and its address in *buf if buf is not NULL); -1 if none.
 * Refuses (-2) an id that is out of range or not with the device: a broken device must not
 * corrupt the free list. A free descriptor has address 0 (page 0 is never a buffer). */
int uk_vq_take_used(struct uk_vq *vq, uint32_t *len, void **buf);

/* The physical addresses QEMU is told (QueueDesc, QueueDriver, QueueDevice). */
static inline uint64_t uk_vq_desc_address(const struct uk_vq *vq) {
  return (uint64_t)(uintptr_t)vq->desc;
}
static inline uint64_t uk_vq_avail_address(const struct uk_vq *vq) {
  return (uint64_t)(uintptr_t)vq->avail;
}
static inline uint64_t uk_vq_used_address(const struct uk_vq *vq) {
  return (uint64_t)(uintptr_t)vq->used;
}

#ifdef __cplusplus
}
#endif

#endif
