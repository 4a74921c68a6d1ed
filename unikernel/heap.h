/* The unikernel's heap: a first-fit allocator over an address-ordered free list, with
 * neighbouring free blocks merged on free. Big frame buffers come and go per invocation, so
 * merging matters more than speed; a few blocks live at a time, so a list walk is short.
 *
 * Freestanding (no libc) and host-testable: unikernel/tests/heap_test.cc runs it on an
 * array. Not thread-safe (the guest has one CPU and no interrupts). */
#ifndef FAASVISOR_UNIKERNEL_HEAP_H
#define FAASVISOR_UNIKERNEL_HEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UK_HEAP_ALIGN 16u

struct uk_block;

struct uk_heap {
  struct uk_block *free_list; /* address order */
  size_t total_bytes;         /* all memory given by uk_heap_add */
  size_t free_bytes;          /* in free blocks, block headers included */
};

void uk_heap_init(struct uk_heap *heap);

/* Gives [base, base + len) to the heap (trimmed to UK_HEAP_ALIGN). Regions must not
 * overlap each other; adjacent ones merge. Returns the bytes added (0 if too small). */
size_t uk_heap_add(struct uk_heap *heap, void *base, size_t len);

/* len bytes aligned to UK_HEAP_ALIGN, or NULL when no free block is large enough. */
void *uk_heap_alloc(struct uk_heap *heap, size_t len);

/* Returns ptr's block to the heap. NULL is ignored. Returns 0, or -1 (and changes nothing)
 * when ptr is not a live allocation of this heap: a double free or a stray pointer. */
int uk_heap_free(struct uk_heap *heap, void *ptr);

/* The largest allocation that would succeed now. */
size_t uk_heap_largest(const struct uk_heap *heap);

#ifdef __cplusplus
}
#endif

#endif
