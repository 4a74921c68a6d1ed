/* The instance protocol on a virtio-serial port (virtio_console.h). */
#include "virtio_console.h"

#include <stdint.h>
#include <string.h>

#include "io.h"
#include "kernel.h"
#include "virtio_mmio.h"
#include "virtqueue.h"

#define PORT 1
#define CONTROL_TX_QUEUE 3 /* multiport: 0, 1 are port 0's; 2, 3 the control pair */
#define RX_QUEUE (2 * (PORT + 1))
#define TX_QUEUE (2 * (PORT + 1) + 1)
#define F_MULTIPORT (1ull << 1)
#define F_EVENT_IDX (1ull << 29)
#define EVENT_PORT_OPEN 6

#define RX_BUFFERS 32u
#define RX_BUFFER_BYTES 4096u /* QEMU's chardev reads: at most 4 KiB each */
/* A reader sleeps until this many buffers are full (or as many as the bytes it waits for
 * need, if fewer): half the ring, so the device fills the other half meanwhile. */
#define RX_WAKE_BUFFERS (RX_BUFFERS / 2)
#define TX_QUEUE_SIZE 2u      /* one write in flight at a time */
#define CONTROL_QUEUE_SIZE 1u
#define MAX_DESCRIPTOR_BYTES (1u << 30)

/* The device's window must lie in the fourth GiB, which boot.S maps uncached. */
#define MMIO_WINDOW_START 0xc0000000ull
#define MMIO_WINDOW_END 0x100000000ull

struct control_message {
  uint32_t id;
  uint16_t event;
  uint16_t value;
};

static struct uk_virtio_dev dev;
static struct uk_vq rxq, txq, controlq;
/* The receive buffer being read from: bytes [rx_pos, rx_len) are still unread. */
static uint8_t *rx_buffer;
static uint32_t rx_len, rx_pos;

int uk_vconsole_probe(const char *cmdline, size_t len) {
  struct uk_virtio_mmio_slot slots[UK_VIRTIO_MAX_DEVICES];
  size_t n = uk_virtio_mmio_parse(cmdline, len, slots, UK_VIRTIO_MAX_DEVICES);
  for (size_t i = 0; i < n; i++) {
    if (slots[i].base < MMIO_WINDOW_START || slots[i].base >= MMIO_WINDOW_END ||
        slots[i].size < 0x100 || slots[i].size > MMIO_WINDOW_END - slots[i].base)
      continue;
    if (uk_virtio_device_id((uintptr_t)slots[i].base) == UK_VIRTIO_ID_CONSOLE) {
      dev.base = (uintptr_t)slots[i].base;
      dev.irq = slots[i].irq;
      return 1;
    }
  }
  return 0;
}

/* The device returned a buffer it was not given, or kept more than it could have. */
static _Noreturn void device_broken(void) {
  static const char *const parts[] = {"faasvisor unikernel: the virtio console broke the "
                                      "virtqueue protocol"};
  uk_report(parts, 1);
  uk_exit(UK_EXIT_CRASH);
}

/* Halts until the device has returned count buffers on vq, or fewer if some were already
 * there. The acknowledgement lowers the interrupt line first, so a buffer returned after
 * the last look raises it again and ends the halt (wait_for_interrupt takes an interrupt
 * that is already pending). */
static void wait_used(struct uk_vq *vq, uint16_t count) {
  uk_vq_interrupt_after(vq, count);
  while (!uk_vq_has_used(vq)) {
    uk_virtio_ack_interrupt(&dev);
    if (uk_vq_has_used(vq)) break;
    wait_for_interrupt();
  }
}

/* Gives the device one buffer on queue index, telling it if it asked to be told. */
static void add(struct uk_vq *vq, uint32_t index, const void *buf, uint32_t len, uint16_t flags) {
  uint16_t old = vq->avail_idx;
  if (uk_vq_add(vq, buf, len, flags) < 0) device_broken(); /* never more out than fit */
  if (uk_vq_must_notify(vq, old)) uk_virtio_notify(&dev, index);
}

/* Sends one buffer on queue index of vq and waits until the device is done with it. */
static void send_and_wait(struct uk_vq *vq, uint32_t index, const void *buf, uint32_t len) {
  add(vq, index, buf, len, 0);
  wait_used(vq, 1);
  if (uk_vq_take_used(vq, NULL, NULL) < 0) device_broken();
}

static void give_back(uint8_t *buffer) {
  add(&rxq, RX_QUEUE, buffer, RX_BUFFER_BYTES, UK_VQ_DESC_F_WRITE);
}

static const char *setup_queue(struct uk_vq *vq, uint16_t size, uint32_t index) {
  void *memory = uk_heap_alloc(&uk_heap, uk_vq_bytes(size));
  if (memory == NULL) return "no memory for the virtio console's queues";
  uk_vq_init(vq, size, memory);
  return uk_virtio_queue(&dev, index, vq);
}

const char *uk_vconsole_start(void) {
  const char *why = uk_virtio_start(&dev, F_MULTIPORT | F_EVENT_IDX);
  if (why == NULL) why = setup_queue(&controlq, CONTROL_QUEUE_SIZE, CONTROL_TX_QUEUE);
  if (why == NULL) why = setup_queue(&rxq, RX_BUFFERS, RX_QUEUE);
  if (why == NULL) why = setup_queue(&txq, TX_QUEUE_SIZE, TX_QUEUE);
  if (why != NULL) return why;
  uint8_t *buffers = uk_heap_alloc(&uk_heap, RX_BUFFERS * RX_BUFFER_BYTES);
  if (buffers == NULL) return "no memory for the virtio console's receive buffers";
  if (uk_irq_route(dev.irq, UK_VIRTIO_VECTOR) != 0)
    return "the virtio console's interrupt is not an I/O APIC pin";
  uk_virtio_ready(&dev);

  /* Open the port first: until then QEMU offers the guest no input, and the receive
   * notification below is what makes it look at its input again. */
  static const struct control_message open = {PORT, EVENT_PORT_OPEN, 1};
  send_and_wait(&controlq, CONTROL_TX_QUEUE, &open, sizeof open);
  for (unsigned i = 0; i < RX_BUFFERS; i++)
    if (uk_vq_add(&rxq, buffers + i * RX_BUFFER_BYTES, RX_BUFFER_BYTES, UK_VQ_DESC_F_WRITE) < 0)
      return "the receive queue is full";
  uk_virtio_notify(&dev, RX_QUEUE);
  return NULL;
}

/* Makes the next buffer the device filled the current one, halting until there is one.
 * wanted bytes are still to read: a buffer holds at most RX_BUFFER_BYTES, so the device
 * fills at least wanted / RX_BUFFER_BYTES buffers before the reader is done, and the halt
 * can last until that many are full. */
static void next_rx_buffer(size_t wanted) {
  for (;;) {
    void *buffer;
    uint32_t len;
    int id = uk_vq_take_used(&rxq, &len, &buffer);
    if (id == -2) device_broken();
    if (id >= 0 && len == 0) {
      give_back(buffer);
      continue;
    }
    if (id >= 0) {
      rx_buffer = buffer;
      rx_len = len;
      rx_pos = 0;
      return;
    }
    size_t buffers = (wanted + RX_BUFFER_BYTES - 1) / RX_BUFFER_BYTES;
    wait_used(&rxq, (uint16_t)(buffers < RX_WAKE_BUFFERS ? buffers : RX_WAKE_BUFFERS));
  }
}

void uk_vconsole_read(void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    if (rx_buffer == NULL) next_rx_buffer(len);
    uint32_t n = rx_len - rx_pos;
    if (n > len) n = (uint32_t)len;
    memcpy(p, rx_buffer + rx_pos, n);
    p += n;
    len -= n;
    rx_pos += n;
    if (rx_pos == rx_len) {
      give_back(rx_buffer);
      rx_buffer = NULL;
    }
  }
}

void uk_vconsole_write(const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    uint32_t n = len > MAX_DESCRIPTOR_BYTES ? MAX_DESCRIPTOR_BYTES : (uint32_t)len;
    send_and_wait(&txq, TX_QUEUE, p, n);
    p += n;
    len -= n;
  }
}
