/* The virtio-mmio transport (virtio_mmio.h). */
#include "virtio_mmio.h"

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0
#define REG_QUEUE_DEVICE_HIGH 0x0a4

#define MAGIC 0x74726976u /* "virt" */
#define STATUS_ACKNOWLEDGE 1u
#define STATUS_DRIVER 2u
#define STATUS_DRIVER_OK 4u
#define STATUS_FEATURES_OK 8u
#define F_VERSION_1 (1ull << 32)

/* ---- the command line ---- */

static const char k_key[] = "virtio_mmio.device=";

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

/* A number at *p (0x for hex, else decimal) before end: advances *p, returns 0 or -1. */
static int parse_number(const char **p, const char *end, uint64_t *out) {
  const char *s = *p;
  unsigned base = 10;
  if (end - s > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  uint64_t v = 0;
  const char *digits = s;
  for (; s < end; s++) {
    unsigned d;
    if (*s >= '0' && *s <= '9')
      d = (unsigned)(*s - '0');
    else if (base == 16 && *s >= 'a' && *s <= 'f')
      d = (unsigned)(*s - 'a' + 10);
    else if (base == 16 && *s >= 'A' && *s <= 'F')
      d = (unsigned)(*s - 'A' + 10);
    else
      break;
    if (v > (UINT64_MAX - d) / base) return -1;
    v = v * base + d;
  }
  if (s == digits) return -1;
  *p = s;
  *out = v;
  return 0;
}

/* One entry from p (just after the key) to end (the end of the word). */
static int parse_entry(const char *p, const char *end, struct uk_virtio_mmio_slot *slot) {
  uint64_t size, base, irq;
  if (parse_number(&p, end, &size) != 0) return -1;
  if (p < end && (*p == 'K' || *p == 'k' || *p == 'M' || *p == 'm' || *p == 'G' || *p == 'g')) {
    unsigned shift = (*p == 'K' || *p == 'k') ? 10 : (*p == 'M' || *p == 'm') ? 20 : 30;
    if (size > (UINT64_MAX >> shift)) return -1;
    size <<= shift;
    p++;
  }
  if (p >= end || *p++ != '@' || parse_number(&p, end, &base) != 0) return -1;
  if (p >= end || *p++ != ':' || parse_number(&p, end, &irq) != 0 || irq > UINT32_MAX) return -1;
  if (p < end && *p == ':') { /* the platform device id: not needed */
    uint64_t id;
    p++;
    if (parse_number(&p, end, &id) != 0) return -1;
  }
  if (p != end || size == 0) return -1;
  slot->base = base;
  slot->size = size;
  slot->irq = (uint32_t)irq;
  return 0;
}

size_t uk_virtio_mmio_parse(const char *cmdline, size_t len, struct uk_virtio_mmio_slot *out,
                            size_t max) {
  size_t found = 0;
  size_t n = 0;
  while (n < len && cmdline[n] != '\0') n++;
  const char *p = cmdline, *end = cmdline + n;
  while (p < end && found < max) {
    while (p < end && is_space(*p)) p++;
    const char *word = p;
    while (p < end && !is_space(*p)) p++;
    size_t key_len = sizeof k_key - 1;
    if ((size_t)(p - word) > key_len) {
      size_t i = 0;
      while (i < key_len && word[i] == k_key[i]) i++;
      if (i == key_len && parse_entry(word + key_len, p, &out[found]) == 0) found++;
    }
  }
  return found;
}

/* ---- registers ---- */

static uint32_t reg_read(const struct uk_virtio_dev *dev, uint32_t offset) {
  return *(volatile uint32_t *)(dev->base + offset);
}

static void reg_write(const struct uk_virtio_dev *dev, uint32_t offset, uint32_t value) {
  *(volatile uint32_t *)(dev->base + offset) = value;
}

int uk_virtio_device_id(uintptr_t base) {
  struct uk_virtio_dev dev = {base, 0};
  if (reg_read(&dev, REG_MAGIC) != MAGIC) return -1;
  return (int)reg_read(&dev, REG_DEVICE_ID);
}

const char *uk_virtio_start(const struct uk_virtio_dev *dev, uint64_t want) {
  if (reg_read(dev, REG_VERSION) != 2)
    return "the virtio-mmio device is legacy (version 1); start QEMU with "
           "-global virtio-mmio.force-legacy=false";
  want |= F_VERSION_1;
  reg_write(dev, REG_STATUS, 0); /* reset */
  reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE);
  reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  uint64_t offered = 0;
  for (uint32_t word = 0; word < 2; word++) {
    reg_write(dev, REG_DEVICE_FEATURES_SEL, word);
    offered |= (uint64_t)reg_read(dev, REG_DEVICE_FEATURES) << (32 * word);
  }
  if ((offered & want) != want) return "the virtio device lacks a feature the driver needs";
  for (uint32_t word = 0; word < 2; word++) {
    reg_write(dev, REG_DRIVER_FEATURES_SEL, word);
    reg_write(dev, REG_DRIVER_FEATURES, (uint32_t)(want >> (32 * word)));
  }
  reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (!(reg_read(dev, REG_STATUS) & STATUS_FEATURES_OK))
    return "the virtio device refused the driver's features";
  return NULL;
}

const char *uk_virtio_queue(const struct uk_virtio_dev *dev, uint32_t index, const struct uk_vq *vq) {
  reg_write(dev, REG_QUEUE_SEL, index);
  if (reg_read(dev, REG_QUEUE_READY) != 0) return "a virtqueue is already in use";
  uint32_t max = reg_read(dev, REG_QUEUE_NUM_MAX);
  if (max == 0) return "the virtio device has no such virtqueue";
  if (max < vq->size) return "the device's virtqueue is smaller than the driver's";
  reg_write(dev, REG_QUEUE_NUM, vq->size);
  uint64_t addresses[3] = {uk_vq_desc_address(vq), uk_vq_avail_address(vq), uk_vq_used_address(vq)};
  static const uint32_t low[3] = {REG_QUEUE_DESC_LOW, REG_QUEUE_DRIVER_LOW, REG_QUEUE_DEVICE_LOW};
  static const uint32_t high[3] = {REG_QUEUE_DESC_HIGH, REG_QUEUE_DRIVER_HIGH, REG_QUEUE_DEVICE_HIGH};
  for (int i = 0; i < 3; i++) {
    reg_write(dev, low[i], (uint32_t)addresses[i]);
    reg_write(dev, high[i], (uint32_t)(addresses[i] >> 32));
  }
  reg_write(dev, REG_QUEUE_READY, 1);
  return NULL;
}

void uk_virtio_ready(const struct uk_virtio_dev *dev) {
  reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

void uk_virtio_notify(const struct uk_virtio_dev *dev, uint32_t index) {
  reg_write(dev, REG_QUEUE_NOTIFY, index);
}

void uk_virtio_ack_interrupt(const struct uk_virtio_dev *dev) {
  uint32_t pending = reg_read(dev, REG_INTERRUPT_STATUS);
  if (pending != 0) reg_write(dev, REG_INTERRUPT_ACK, pending);
}
