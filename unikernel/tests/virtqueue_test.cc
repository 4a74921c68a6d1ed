// The unikernel's split virtqueues (unikernel/virtqueue.c) and the virtio-mmio command-line
// parser (unikernel/virtio_mmio.c), built freestanding as they go into an image, run on host
// memory. A test device reads and writes the rings at the offsets the virtio 1.x spec gives
// (not through the driver's pointers), and decides notifications as QEMU does with
// VIRTIO_F_EVENT_IDX.
#include "virtio_mmio.h"
#include "virtqueue.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr uint16_t kWrite = UK_VQ_DESC_F_WRITE;

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// The device's view of one queue's memory.
struct Device {
  uint8_t *base;
  uint16_t size;
  uint16_t last_avail = 0;
  uint16_t used_idx = 0;
  uint16_t signalled_used = 0;
  bool signalled_valid = false;

  size_t avail_at() const { return size_t{size} * 16; }
  size_t used_at() const { return align_up(avail_at() + 6 + 2 * size_t{size}, 4); }
  uint16_t u16(size_t at) const {
    uint16_t v;
    std::memcpy(&v, base + at, 2);
    return v;
  }
  void put16(size_t at, uint16_t v) { std::memcpy(base + at, &v, 2); }
  void put32(size_t at, uint32_t v) { std::memcpy(base + at, &v, 4); }

  struct Popped {
    uint16_t id;
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
  };
  // The next available buffer, if any; like QEMU, it then says it has seen up to here
  // (avail_event), so the driver notifies only for buffers after this one.
  bool pop(Popped *out) {
    uint16_t avail_idx = u16(avail_at() + 2);
    if (avail_idx == last_avail) return false;
    uint16_t id = u16(avail_at() + 4 + 2 * size_t(last_avail % size));
    REQUIRE(id < size);
    const uint8_t *d = base + size_t{id} * 16;
    out->id = id;
    std::memcpy(&out->addr, d, 8);
    std::memcpy(&out->len, d + 8, 4);
    std::memcpy(&out->flags, d + 12, 2);
    last_avail++;
    put16(used_at() + 4 + 8 * size_t{size}, last_avail);  // avail_event
    return true;
  }
  void push(uint32_t id, uint32_t len) {
    size_t at = used_at() + 4 + 8 * size_t(used_idx % size);
    put32(at, id);
    put32(at + 4, len);
    used_idx++;
    put16(used_at() + 2, used_idx);
  }
  // QEMU's virtio_should_notify with EVENT_IDX: whether the used index passed used_event
  // since the last interrupt.
  bool interrupt() {
    uint16_t event = u16(avail_at() + 4 + 2 * size_t{size});
    uint16_t old = signalled_used;
    bool first = !signalled_valid;
    signalled_valid = true;
    signalled_used = used_idx;
    return first || uint16_t(used_idx - event - 1) < uint16_t(used_idx - old);
  }
};

struct Queue {
  std::vector<uint8_t> memory;
  uint8_t *base;
  uk_vq vq{};
  Device dev;
  explicit Queue(uint16_t size)
      : memory(uk_vq_bytes(size) + 16),
        base(reinterpret_cast<uint8_t *>(align_up(reinterpret_cast<uintptr_t>(memory.data()), 16))),
        dev{base, size} {
    std::memset(memory.data(), 0xa5, memory.size());  // init must clear it
    REQUIRE(uk_vq_init(&vq, size, base) == 0);
  }
};

}  // namespace

TEST_CASE("virtqueue: the layout is the spec's for every queue size, and bad sizes are refused") {
  for (uint32_t size = 1; size <= 32768; size *= 2) {
    Queue q(static_cast<uint16_t>(size));
    CHECK(reinterpret_cast<uint8_t *>(uk_vq_desc_address(&q.vq)) == q.base);
    CHECK(reinterpret_cast<uint8_t *>(uk_vq_avail_address(&q.vq)) == q.base + q.dev.avail_at());
    CHECK(reinterpret_cast<uint8_t *>(uk_vq_used_address(&q.vq)) == q.base + q.dev.used_at());
    CHECK(uk_vq_used_address(&q.vq) % 4 == 0);
    size_t end = q.dev.used_at() + 4 + 8 * size + 2;  // avail_event is the last field
    CHECK(uk_vq_bytes(static_cast<uint16_t>(size)) >= end);
    CHECK(uk_vq_bytes(static_cast<uint16_t>(size)) % 16 == 0);
    // Both rings start empty (the descriptors hold the free list's links).
    CHECK(std::all_of(q.base + q.dev.avail_at(), q.base + end, [](uint8_t b) { return b == 0; }));
    CHECK(uk_vq_free(&q.vq) == size);
  }
  alignas(16) static uint8_t memory[4096];
  uk_vq vq{};
  for (uint16_t bad : {0, 3, 6, 100, 65535}) CHECK(uk_vq_init(&vq, bad, memory) == -1);
}

TEST_CASE("virtqueue: a buffer reaches the device as given and comes back with what it wrote") {
  Queue q(4);
  uint8_t rx[64] = {}, tx[] = "hello";
  int rx_id = uk_vq_add(&q.vq, rx, sizeof rx, kWrite);
  int tx_id = uk_vq_add(&q.vq, tx, 5, 0);
  REQUIRE(rx_id >= 0);
  REQUIRE(tx_id >= 0);
  CHECK(rx_id != tx_id);
  CHECK(uk_vq_free(&q.vq) == 2);
  CHECK_FALSE(uk_vq_has_used(&q.vq));

  Device::Popped a{}, b{};
  REQUIRE(q.dev.pop(&a));
  REQUIRE(q.dev.pop(&b));
  CHECK_FALSE(q.dev.pop(&b));
  CHECK((a.id == rx_id && a.addr == reinterpret_cast<uintptr_t>(rx) && a.len == 64 && a.flags == kWrite));
  CHECK((b.id == tx_id && b.addr == reinterpret_cast<uintptr_t>(tx) && b.len == 5 && b.flags == 0));

  // The device finishes the transmit first, then writes 3 bytes into the receive buffer.
  q.dev.push(b.id, 0);
  std::memcpy(rx, "abc", 3);
  q.dev.push(a.id, 3);
  CHECK(uk_vq_has_used(&q.vq));
  uint32_t len = 99;
  void *buf = nullptr;
  CHECK(uk_vq_take_used(&q.vq, &len, &buf) == tx_id);
  CHECK((len == 0 && buf == tx));
  CHECK(uk_vq_take_used(&q.vq, &len, &buf) == rx_id);
  CHECK((len == 3 && buf == rx && std::memcmp(rx, "abc", 3) == 0));
  CHECK(uk_vq_take_used(&q.vq, &len, &buf) == -1);
  CHECK_FALSE(uk_vq_has_used(&q.vq));
  CHECK(uk_vq_free(&q.vq) == 4);
}

TEST_CASE("virtqueue: a full queue refuses more; buffers returned out of order free their descriptors") {
  Queue q(4);
  uint8_t bufs[5][8];
  int ids[4];
  for (int i = 0; i < 4; i++) REQUIRE((ids[i] = uk_vq_add(&q.vq, bufs[i], 8, kWrite)) >= 0);
  CHECK(uk_vq_add(&q.vq, bufs[4], 8, kWrite) == -1);
  CHECK(uk_vq_free(&q.vq) == 0);
  Device::Popped p[4];
  for (auto &e : p) REQUIRE(q.dev.pop(&e));
  for (int i : {2, 0, 3, 1}) q.dev.push(p[i].id, static_cast<uint32_t>(i + 1));
  for (int i : {2, 0, 3, 1}) {
    uint32_t len = 0;
    void *buf = nullptr;
    CHECK(uk_vq_take_used(&q.vq, &len, &buf) == ids[i]);
    CHECK((len == static_cast<uint32_t>(i + 1) && buf == bufs[i]));
  }
  CHECK(uk_vq_free(&q.vq) == 4);
  for (int i = 0; i < 4; i++) CHECK(uk_vq_add(&q.vq, bufs[i], 8, kWrite) >= 0);
}

TEST_CASE("virtqueue: the free-running indices wrap past 65535 without losing a buffer") {
  Queue q(4);
  uint8_t bufs[3][16];
  for (uint32_t round = 0; round < 70000; round++) {
    unsigned n = 1 + round % 3;
    for (unsigned i = 0; i < n; i++) REQUIRE(uk_vq_add(&q.vq, bufs[i], 16, kWrite) >= 0);
    for (unsigned i = 0; i < n; i++) {
      Device::Popped p{};
      REQUIRE(q.dev.pop(&p));
      REQUIRE(p.addr == reinterpret_cast<uintptr_t>(bufs[i]));  // in the order given
      std::memset(bufs[i], static_cast<int>(round), 1);
      q.dev.push(p.id, 1);
    }
    for (unsigned i = 0; i < n; i++) {
      uint32_t len = 0;
      void *buf = nullptr;
      REQUIRE(uk_vq_take_used(&q.vq, &len, &buf) >= 0);
      REQUIRE((buf == bufs[i] && len == 1 && bufs[i][0] == static_cast<uint8_t>(round)));
    }
    REQUIRE(uk_vq_free(&q.vq) == 4);
  }
  CHECK(q.dev.last_avail != 0);  // wrapped, and kept in step
  CHECK(q.vq.avail_idx == q.dev.last_avail);
}

TEST_CASE("virtqueue: a device that returns a buffer it was not given, or a length past it, is refused") {
  Queue q(4);
  uint8_t buf[8];
  REQUIRE(uk_vq_add(&q.vq, buf, 8, kWrite) == 0);
  CHECK(uk_vq_add(&q.vq, nullptr, 8, kWrite) == -2);
  CHECK(uk_vq_add(&q.vq, buf, 0, kWrite) == -2);
  Device::Popped p{};
  REQUIRE(q.dev.pop(&p));
  q.dev.push(p.id, 1000);  // more than the buffer holds
  uint32_t len = 0;
  CHECK(uk_vq_take_used(&q.vq, &len, nullptr) == 0);
  CHECK(len == 8);
  q.dev.push(p.id, 1);  // again: the driver has it back already
  CHECK(uk_vq_take_used(&q.vq, &len, nullptr) == -2);
  CHECK(uk_vq_free(&q.vq) == 4);  // the free list is untouched

  Queue r(2);
  REQUIRE(uk_vq_add(&r.vq, buf, 8, kWrite) == 0);
  r.dev.push(7, 1);  // no such descriptor
  CHECK(uk_vq_take_used(&r.vq, &len, nullptr) == -2);
  CHECK(uk_vq_free(&r.vq) == 1);
}

TEST_CASE("virtqueue: the driver notifies only for buffers the device asked to hear of") {
  Queue q(8);
  uint8_t buf[8][4];
  Device::Popped p{};
  // Nothing seen yet (avail_event 0): the first buffer must be told.
  uint16_t old = q.vq.avail_idx;
  REQUIRE(uk_vq_add(&q.vq, buf[0], 4, kWrite) >= 0);
  CHECK(uk_vq_must_notify(&q.vq, old));
  // The device has not looked since: a second buffer needs no notification.
  old = q.vq.avail_idx;
  REQUIRE(uk_vq_add(&q.vq, buf[1], 4, kWrite) >= 0);
  CHECK_FALSE(uk_vq_must_notify(&q.vq, old));
  // It takes one and still has one: no notification needed for a third.
  REQUIRE(q.dev.pop(&p));
  old = q.vq.avail_idx;
  REQUIRE(uk_vq_add(&q.vq, buf[2], 4, kWrite) >= 0);
  CHECK_FALSE(uk_vq_must_notify(&q.vq, old));
  // It takes everything: the next buffer must be told, also when added in a batch.
  while (q.dev.pop(&p)) {
  }
  old = q.vq.avail_idx;
  REQUIRE(uk_vq_add(&q.vq, buf[3], 4, kWrite) >= 0);
  REQUIRE(uk_vq_add(&q.vq, buf[4], 4, kWrite) >= 0);
  CHECK(uk_vq_must_notify(&q.vq, old));
}

TEST_CASE("virtqueue: the device interrupts only once the count the driver waits for is returned") {
  Queue q(8);
  uint8_t buf[8][4];
  for (auto &b : buf) REQUIRE(uk_vq_add(&q.vq, b, 4, kWrite) >= 0);
  Device::Popped p[8];
  for (auto &e : p) REQUIRE(q.dev.pop(&e));
  CHECK(q.dev.interrupt());  // the first is always signalled (QEMU's rule too)

  uk_vq_interrupt_after(&q.vq, 3);
  q.dev.push(p[0].id, 4);
  CHECK_FALSE(q.dev.interrupt());
  q.dev.push(p[1].id, 4);
  CHECK_FALSE(q.dev.interrupt());
  q.dev.push(p[2].id, 4);
  CHECK(q.dev.interrupt());

  // The driver takes one and waits for one more: the next return interrupts.
  REQUIRE(uk_vq_take_used(&q.vq, nullptr, nullptr) >= 0);
  uk_vq_interrupt_after(&q.vq, 3);  // 2 are there; a third is p[3]
  q.dev.push(p[3].id, 4);
  CHECK(q.dev.interrupt());
  // Waiting for 1 with everything taken: the very next return interrupts.
  while (uk_vq_take_used(&q.vq, nullptr, nullptr) >= 0) {
  }
  uk_vq_interrupt_after(&q.vq, 1);
  q.dev.push(p[4].id, 4);
  CHECK(q.dev.interrupt());
}

TEST_CASE("virtio-mmio: QEMU microvm's command-line entries are parsed, others skipped") {
  uk_virtio_mmio_slot s[UK_VIRTIO_MAX_DEVICES];
  std::string line = " virtio_mmio.device=512@0xfeb00e00:12";  // what QEMU 7.2 appends
  REQUIRE(uk_virtio_mmio_parse(line.c_str(), line.size(), s, UK_VIRTIO_MAX_DEVICES) == 1);
  CHECK((s[0].base == 0xfeb00e00u && s[0].size == 512 && s[0].irq == 12));

  line = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5:3 quiet "
         "virtio_mmio.device=1M@0xFEB00000:7\tvirtio_mmio.device=0x200@4096:24";
  REQUIRE(uk_virtio_mmio_parse(line.c_str(), line.size(), s, UK_VIRTIO_MAX_DEVICES) == 3);
  CHECK((s[0].base == 0xd0000000u && s[0].size == 4096 && s[0].irq == 5));
  CHECK((s[1].base == 0xfeb00000u && s[1].size == (1u << 20) && s[1].irq == 7));
  CHECK((s[2].base == 4096 && s[2].size == 0x200 && s[2].irq == 24));

  for (const char *bad : {"virtio_mmio.device=@0x1000:2", "virtio_mmio.device=512@0x1000",
                          "virtio_mmio.device=512@0xzz:1", "virtio_mmio.device=512@0x1000:5x",
                          "virtio_mmio.device=512@0x1000:", "virtio_mmio.device=0@0x1000:5",
                          "virtio_mmio.device=512x@0x1000:5", "xvirtio_mmio.device=512@0x1000:5",
                          "virtio_mmio.device=99999999999999999999@0x1000:1",
                          "virtio_mmio.device=16G@0x1000:99999999999", "virtio_mmio.device=",
                          "virtio_mmio.devices=512@0x1000:5", "virtio_mmio.device=512@0x1000:5:"}) {
    CAPTURE(bad);
    CHECK(uk_virtio_mmio_parse(bad, std::strlen(bad), s, UK_VIRTIO_MAX_DEVICES) == 0);
  }
}

TEST_CASE("virtio-mmio: the parser stops at the length, at a NUL, and at the caller's maximum") {
  uk_virtio_mmio_slot s[2];
  const char line[] = "virtio_mmio.device=512@0x1000:5 virtio_mmio.device=512@0x2000:6";
  CHECK(uk_virtio_mmio_parse(line, 31, s, 2) == 1);  // exactly the first entry
  CHECK(uk_virtio_mmio_parse(line, 30, s, 2) == 0);  // cut inside it: "...:" then nothing
  CHECK(uk_virtio_mmio_parse(line, sizeof line, s, 1) == 1);
  CHECK(s[0].base == 0x1000);
  CHECK(uk_virtio_mmio_parse(line, sizeof line, s, 2) == 2);
  CHECK(s[1].base == 0x2000);
  const char with_nul[] = "virtio_mmio.device=512@0x1000:5\0virtio_mmio.device=512@0x2000:6";
  CHECK(uk_virtio_mmio_parse(with_nul, sizeof with_nul, s, 2) == 1);
  CHECK(uk_virtio_mmio_parse("", 0, s, 2) == 0);
}
