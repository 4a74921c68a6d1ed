/* First-fit heap over an address-ordered free list (heap.h). Every block starts with a
 * 16-byte header: its size, then the next free block (free) or a check word (allocated)
 * that lets free() refuse double frees and stray pointers instead of corrupting the list. */
#include "heap.h"

#define HEADER_BYTES 16u
#define MIN_BLOCK_BYTES (HEADER_BYTES + UK_HEAP_ALIGN)
#define LIVE_MAGIC 0x6b6f6f6c6c61766cull /* xor the block's address */

struct uk_block {
  size_t size; /* whole block, header included, a multiple of UK_HEAP_ALIGN */
  union {
    struct uk_block *next; /* free blocks */
    uint64_t check;        /* allocated blocks: LIVE_MAGIC ^ address */
  } u;
};

_Static_assert(sizeof(struct uk_block) == HEADER_BYTES, "block header size");

static uintptr_t addr(const void *p) { return (uintptr_t)p; }

static uintptr_t block_end(const struct uk_block *b) { return addr(b) + b->size; }

static uint64_t live_check(const struct uk_block *b) { return LIVE_MAGIC ^ (uint64_t)addr(b); }

void uk_heap_init(struct uk_heap *heap) {
  heap->free_list = NULL;
  heap->total_bytes = 0;
  heap->free_bytes = 0;
}

/* Links b between prev and next (either may be NULL) and merges it with whichever of them
 * it touches. The caller has checked that b overlaps neither. */
static void link_free(struct uk_heap *heap, struct uk_block *prev, struct uk_block *b,
                      struct uk_block *next) {
  b->u.next = next;
  if (next != NULL && block_end(b) == addr(next)) {
    b->size += next->size;
    b->u.next = next->u.next;
    next->size = 0;
  }
  if (prev != NULL && block_end(prev) == addr(b)) {
    prev->size += b->size;
    prev->u.next = b->u.next;
    b->size = 0;
    b->u.check = 0; /* a second free of this block must not pass the check */
  } else if (prev != NULL) {
    prev->u.next = b;
  } else {
    heap->free_list = b;
  }
}

/* Finds the free blocks around [start, end) and checks it overlaps none. Returns 0 with
 * *prev_out / *next_out set, or -1 on overlap. */
static int find_neighbours(const struct uk_heap *heap, uintptr_t start, uintptr_t end,
                           struct uk_block **prev_out, struct uk_block **next_out) {
  struct uk_block *prev = NULL;
  struct uk_block *next = heap->free_list;
  while (next != NULL && addr(next) < start) {
    prev = next;
    next = next->u.next;
  }
  if (prev != NULL && block_end(prev) > start) return -1;
  if (next != NULL && end > addr(next)) return -1;
  *prev_out = prev;
  *next_out = next;
  return 0;
}

size_t uk_heap_add(struct uk_heap *heap, void *base, size_t len) {
  uintptr_t start = (addr(base) + UK_HEAP_ALIGN - 1) & ~(uintptr_t)(UK_HEAP_ALIGN - 1);
  if (start < addr(base) || len < start - addr(base)) return 0; /* wrapped, or too small */
  len -= start - addr(base);
  len &= ~(size_t)(UK_HEAP_ALIGN - 1);
  if (len < MIN_BLOCK_BYTES) return 0;
  struct uk_block *prev;
  struct uk_block *next;
  if (find_neighbours(heap, start, start + len, &prev, &next) != 0) return 0;
  struct uk_block *b = (struct uk_block *)start;
  b->size = len;
  link_free(heap, prev, b, next);
  heap->total_bytes += len;
  heap->free_bytes += len;
  return len;
}

void *uk_heap_alloc(struct uk_heap *heap, size_t len) {
  if (len == 0) len = 1;
  if (len > SIZE_MAX - HEADER_BYTES - UK_HEAP_ALIGN) return NULL;
  size_t need = (len + HEADER_BYTES + UK_HEAP_ALIGN - 1) & ~(size_t)(UK_HEAP_ALIGN - 1);
  struct uk_block **link = &heap->free_list;
  for (struct uk_block *b = *link; b != NULL; link = &b->u.next, b = *link) {
    if (b->size < need) continue;
    struct uk_block *live;
    if (b->size - need >= MIN_BLOCK_BYTES) {
      /* Split from the end: the free block keeps its place in the list. */
      b->size -= need;
      live = (struct uk_block *)block_end(b);
      live->size = need;
    } else {
      *link = b->u.next;
      live = b;
    }
    live->u.check = live_check(live);
    heap->free_bytes -= live->size;
    return (char *)live + HEADER_BYTES;
  }
  return NULL;
}

int uk_heap_free(struct uk_heap *heap, void *ptr) {
  if (ptr == NULL) return 0;
  if (addr(ptr) % UK_HEAP_ALIGN != 0 || addr(ptr) < HEADER_BYTES) return -1;
  struct uk_block *b = (struct uk_block *)((char *)ptr - HEADER_BYTES);
  if (b->u.check != live_check(b)) return -1;
  if (b->size < MIN_BLOCK_BYTES || b->size % UK_HEAP_ALIGN != 0 || b->size > heap->total_bytes)
    return -1;
  struct uk_block *prev;
  struct uk_block *next;
  if (find_neighbours(heap, addr(b), block_end(b), &prev, &next) != 0) return -1;
  heap->free_bytes += b->size;
  link_free(heap, prev, b, next);
  return 0;
}

size_t uk_heap_largest(const struct uk_heap *heap) {
  size_t largest = 0;
  for (const struct uk_block *b = heap->free_list; b != NULL; b = b->u.next)
    if (b->size > largest) largest = b->size;
  return largest > HEADER_BYTES ? largest - HEADER_BYTES : 0;
}
