// The unikernel's heap (unikernel/heap.c), built freestanding as it goes into an image, run
// on a host array.
#include "heap.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

constexpr size_t kArenaBytes = 64 * 1024;

struct Arena {
  alignas(16) unsigned char bytes[kArenaBytes];
  uk_heap heap;
  Arena() {
    uk_heap_init(&heap);
    REQUIRE(uk_heap_add(&heap, bytes, sizeof bytes) == sizeof bytes);
  }
};

bool inside(const Arena &a, const void *p, size_t len) {
  auto q = reinterpret_cast<uintptr_t>(p);
  auto base = reinterpret_cast<uintptr_t>(a.bytes);
  return q >= base && q + len <= base + sizeof a.bytes;
}

}  // namespace

TEST_CASE("heap: allocations are aligned, inside the region, and do not overlap") {
  Arena a;
  std::vector<std::pair<unsigned char *, size_t>> blocks;
  for (size_t len : {1u, 7u, 16u, 17u, 100u, 4096u, 0u, 33u}) {
    auto *p = static_cast<unsigned char *>(uk_heap_alloc(&a.heap, len));
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % UK_HEAP_ALIGN == 0);
    CHECK(inside(a, p, std::max<size_t>(len, 1)));
    std::memset(p, static_cast<int>(blocks.size() + 1), std::max<size_t>(len, 1));
    blocks.emplace_back(p, std::max<size_t>(len, 1));
  }
  // Each block still holds its own fill byte: no block overlapped another.
  for (size_t i = 0; i < blocks.size(); i++) {
    auto fill = static_cast<unsigned char>(i + 1);
    auto [p, len] = blocks[i];
    REQUIRE(std::all_of(p, p + len, [fill](unsigned char c) { return c == fill; }));
  }
  for (auto &[p, len] : blocks) CHECK(uk_heap_free(&a.heap, p) == 0);
  CHECK(a.heap.free_bytes == a.heap.total_bytes);
}

TEST_CASE("heap: freeing everything merges back into one block") {
  Arena a;
  size_t whole = uk_heap_largest(&a.heap);
  CHECK(whole == kArenaBytes - 16);
  void *p[8];
  for (auto &q : p) q = uk_heap_alloc(&a.heap, 1000);
  // Free in an order that needs merging with the previous, the next, and both neighbours.
  for (int i : {1, 3, 5, 7, 2, 6, 0, 4}) CHECK(uk_heap_free(&a.heap, p[i]) == 0);
  CHECK(uk_heap_largest(&a.heap) == whole);
  CHECK(a.heap.free_bytes == kArenaBytes);
  void *all = uk_heap_alloc(&a.heap, whole);
  CHECK(all == a.bytes + 16);
}

TEST_CASE("heap: exhaustion returns NULL and a free makes room again") {
  Arena a;
  std::vector<void *> blocks;
  while (void *p = uk_heap_alloc(&a.heap, 1024)) blocks.push_back(p);
  CHECK(blocks.size() == kArenaBytes / (1024 + 16));
  CHECK(uk_heap_alloc(&a.heap, 1024) == nullptr);
  CHECK(uk_heap_alloc(&a.heap, SIZE_MAX) == nullptr);
  CHECK(uk_heap_alloc(&a.heap, SIZE_MAX - 20) == nullptr);
  CHECK(uk_heap_free(&a.heap, blocks[5]) == 0);
  CHECK(uk_heap_alloc(&a.heap, 2048) == nullptr);  // fragmented: no 2 KiB run
  CHECK(uk_heap_free(&a.heap, blocks[6]) == 0);
  CHECK(uk_heap_alloc(&a.heap, 2048) != nullptr);  // 5 and 6 merged
  CHECK(uk_heap_alloc(&a.heap, kArenaBytes) == nullptr);
}

TEST_CASE("heap: a double free or a stray pointer is refused and changes nothing") {
  Arena a;
  void *p = uk_heap_alloc(&a.heap, 100);
  void *q = uk_heap_alloc(&a.heap, 100);
  size_t free_before = a.heap.free_bytes;
  CHECK(uk_heap_free(&a.heap, static_cast<char *>(p) + 16) == -1);
  CHECK(uk_heap_free(&a.heap, static_cast<char *>(p) + 1) == -1);
  CHECK(a.heap.free_bytes == free_before);
  CHECK(uk_heap_free(&a.heap, p) == 0);
  CHECK(uk_heap_free(&a.heap, p) == -1);
  CHECK(uk_heap_free(&a.heap, q) == 0);  // q merges with p's block
  CHECK(uk_heap_free(&a.heap, q) == -1);
  CHECK(uk_heap_free(&a.heap, p) == -1);
  CHECK(uk_heap_free(&a.heap, nullptr) == 0);
  CHECK(a.heap.free_bytes == kArenaBytes);
}

TEST_CASE("heap: several regions, trimmed to alignment, overlapping ones refused") {
  alignas(16) static unsigned char low[4096], high[8192];
  uk_heap heap;
  uk_heap_init(&heap);
  CHECK(uk_heap_add(&heap, low + 3, 1000) == 976);  // low + 16 .. low + 992
  CHECK(uk_heap_add(&heap, low + 100, 64) == 0);    // overlaps the first region
  CHECK(uk_heap_add(&heap, high, 8192) == 8192);
  CHECK(uk_heap_add(&heap, high + 8192 - 8, 20) == 0);  // too small once aligned
  CHECK(heap.total_bytes == 976 + 8192);
  // A request larger than one region but smaller than both together does not fit.
  CHECK(uk_heap_alloc(&heap, 8192) == nullptr);
  void *big = uk_heap_alloc(&heap, 8000);
  REQUIRE(big != nullptr);
  CHECK((big >= static_cast<void *>(high) && big < static_cast<void *>(high + 8192)));
  void *small = uk_heap_alloc(&heap, 900);  // only the low region has room left
  REQUIRE(small != nullptr);
  CHECK((small >= static_cast<void *>(low) && small < static_cast<void *>(low + 4096)));
  CHECK(uk_heap_free(&heap, big) == 0);
  CHECK(uk_heap_free(&heap, small) == 0);
  CHECK(heap.free_bytes == heap.total_bytes);
}

TEST_CASE("heap: random alloc/free keeps the books balanced and the contents intact") {
  Arena a;
  std::mt19937 rng(12345);
  struct Live {
    unsigned char *p;
    size_t len;
    unsigned char fill;
  };
  std::vector<Live> live;
  for (int step = 0; step < 20000; step++) {
    if (live.empty() || rng() % 3 != 0) {
      size_t len = 1 + rng() % 3000;
      auto *p = static_cast<unsigned char *>(uk_heap_alloc(&a.heap, len));
      if (p == nullptr) {
        CHECK(uk_heap_largest(&a.heap) < len);
        continue;
      }
      auto fill = static_cast<unsigned char>(rng());
      std::memset(p, fill, len);
      live.push_back({p, len, fill});
    } else {
      size_t i = rng() % live.size();
      const Live &l = live[i];
      REQUIRE(std::all_of(l.p, l.p + l.len, [&l](unsigned char c) { return c == l.fill; }));
      REQUIRE(uk_heap_free(&a.heap, live[i].p) == 0);
      live[i] = live.back();
      live.pop_back();
    }
  }
  for (auto &l : live) REQUIRE(uk_heap_free(&a.heap, l.p) == 0);
  CHECK(a.heap.free_bytes == kArenaBytes);
  CHECK(uk_heap_largest(&a.heap) == kArenaBytes - 16);
}
