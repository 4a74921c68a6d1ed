/* Split virtqueues, the driver's side (virtqueue.h). */
#include "virtqueue.h"

#include <string.h>

#define barrier() __asm__ volatile("" ::: "memory")
#define full_barrier() __asm__ volatile("mfence" ::: "memory")

/* Layout (virtio 1.x 2.6): descriptors (16 bytes each, 16-aligned), the available ring
 * (flags, idx, ring[size], used_event: 2-aligned), then the used ring (flags, idx,
 * ring[size] of 8-byte entries, avail_event: 4-aligned). */
static size_t avail_offset(uint16_t size) { return (size_t)size * sizeof(struct uk_vq_desc); }

static size_t used_offset(uint16_t size) {
  size_t end = avail_offset(size) + 2 * (3 + (size_t)size);
  return (end + 3) & ~(size_t)3;
}

size_t uk_vq_bytes(uint16_t size) {
  size_t end = used_offset(size) + 4 + 8 * (size_t)size + 2;
  return (end + 15) & ~(size_t)15;
}

int uk_vq_init(struct uk_vq *vq, uint16_t size, void *memory) {
  if (size == 0 || size > 32768 || (size & (size - 1)) != 0) return -1;
  memset(memory, 0, uk_vq_bytes(size));
  char *base = memory;
  vq->desc = (volatile struct uk_vq_desc *)base;
  vq->avail = (volatile uint16_t *)(base + avail_offset(size));
  vq->used = (volatile uint16_t *)(base + used_offset(size));
  vq->used_ring = (volatile struct uk_vq_used_elem *)(base + used_offset(size) + 4);
  vq->used_event = vq->avail + 2 + size;
  vq->avail_event = (volatile uint16_t *)(vq->used_ring + size);
  vq->size = size;
  vq->free_head = 0;
  vq->free_count = size;
  vq->avail_idx = 0;
  vq->last_used = 0;
  for (uint16_t i = 0; i + 1 < size; i++) vq->desc[i].next = (uint16_t)(i + 1);
  return 0;
}

int uk_vq_add(struct uk_vq *vq, const void *buf, uint32_t len, uint16_t flags) {
  if (buf == NULL || len == 0) return -2;
  if (vq->free_count == 0) return -1;
  uint16_t id = vq->free_head;
  volatile struct uk_vq_desc *d = &vq->desc[id];
  vq->free_head = d->next;
  vq->free_count--;
  d->addr = (uint64_t)(uintptr_t)buf;
  d->len = len;
  d->flags = flags & UK_VQ_DESC_F_WRITE;
  vq->avail[2 + (vq->avail_idx & (vq->size - 1))] = id;
  barrier(); /* the entry before the index that hands it over */
  vq->avail_idx++;
  vq->avail[1] = vq->avail_idx;
  return id;
}

/* 2.6.7.2: the other side wants to hear of index event if it lies in [old, new). */
static int need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

int uk_vq_must_notify(const struct uk_vq *vq, uint16_t old_avail_idx) {
  full_barrier(); /* the new index out before the device's event index is read */
  return need_event(*vq->avail_event, vq->avail_idx, old_avail_idx);
}

void uk_vq_interrupt_after(struct uk_vq *vq, uint16_t count) {
  *vq->used_event = (uint16_t)(vq->last_used + count - 1);
  full_barrier(); /* the event index out before the caller looks at the used index */
}

int uk_vq_has_used(const struct uk_vq *vq) { return vq->used[1] != vq->last_used; }

int uk_vq_take_used(struct uk_vq *vq, uint32_t *len, void **buf) {
  if (vq->used[1] == vq->last_used) return -1;
  barrier(); /* the index before the entry it covers */
  volatile struct uk_vq_used_elem *e = &vq->used_ring[vq->last_used & (vq->size - 1)];
  uint32_t id = e->id;
  if (id >= vq->size || vq->desc[id].addr == 0) return -2;
  vq->last_used++;
  volatile struct uk_vq_desc *d = &vq->desc[id];
  uint32_t written = e->len;
  if (written > d->len) written = d->len; /* never trust a length past the buffer */
  if (len != NULL) *len = written;
  if (buf != NULL) *buf = (void *)(uintptr_t)d->addr;
  d->addr = 0;
  d->next = vq->free_head;
  vq->free_head = (uint16_t)id;
  vq->free_count++;
  return (int)id;
}
