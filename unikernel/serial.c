/* COM1 driver (serial.h).
 *
 * Transmit: when the line status says the transmit holding register is empty (THRE), the
 * FIFO is empty and takes 16 bytes, written with one rep outsb. QEMU's 16550 passes each
 * byte to its chardev at once and sets THRE again when its FIFO has drained; if the host
 * side is full it keeps THRE clear until the bytes are out, so waiting for THRE before each
 * burst never overruns the FIFO. Firecracker's UART has THRE always set and writes through.
 *
 * Receive: a 16550 has no receive count, only "data ready" (DR) per byte, so each byte
 * costs a status read and a data read. When the FIFO is empty the CPU halts until the
 * receive interrupt (kernel.c routes it): a waiting guest costs the host no CPU, and the
 * VMM's I/O thread is not starved by a polling vCPU (under TCG, polling a 16550 slowed
 * input to a few KB/s). The interrupt fires when the FIFO reaches its trigger level, or
 * 4 character times (~350 us at 115200 baud) after the last byte below it; so the level is
 * set to the largest of 1, 4, 8, 14 not above the bytes still expected, and a frame's tail
 * does not wait for that timeout. QEMU also hands over at most trigger-level bytes per
 * read of its input. Spinning on the status register for a while before halting was
 * measured and is slower (a 100-byte echo took 3-20 ms instead of 1.4 ms): the spinning
 * vCPU competes with QEMU's I/O thread that fills the FIFO. */
#include "serial.h"

#include <stdint.h>

#include "io.h"

#define COM1 0x3f8
#define REG_DATA 0 /* RBR / THR; divisor low with DLAB */
#define REG_IER 1  /* interrupt enable; divisor high with DLAB */
#define REG_FCR 2  /* FIFO control */
#define REG_LCR 3  /* line control */
#define REG_MCR 4  /* modem control */
#define REG_LSR 5  /* line status */
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define MCR_DTR_RTS_OUT2 0x0b /* OUT2 connects the interrupt line on a PC */
#define IER_RECEIVED_DATA 0x01
#define FCR_ENABLE 0x01
#define FCR_CLEAR 0x06
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20
#define TX_FIFO_BYTES 16u

void serial_init(void) {
  outb(COM1 + REG_IER, 0);
  outb(COM1 + REG_LCR, LCR_DLAB);
  outb(COM1 + REG_DATA, 1); /* divisor 1: 115200 baud (a VMM ignores the rate) */
  outb(COM1 + REG_IER, 0);
  outb(COM1 + REG_LCR, LCR_8N1);
  outb(COM1 + REG_FCR, FCR_ENABLE | FCR_CLEAR);
  outb(COM1 + REG_MCR, MCR_DTR_RTS_OUT2);
  outb(COM1 + REG_IER, IER_RECEIVED_DATA);
}

/* FCR bits 7:6 for the largest trigger level not above expected bytes. */
static uint8_t trigger_bits(size_t expected) {
  if (expected >= 14) return 0xc0;
  if (expected >= 8) return 0x80;
  if (expected >= 4) return 0x40;
  return 0x00;
}

void serial_read(void *buf, size_t len) {
  uint8_t *p = buf;
  size_t i = 0;
  while (i < len) {
    if (inb(COM1 + REG_LSR) & LSR_DATA_READY) {
      p[i++] = inb(COM1 + REG_DATA);
      continue;
    }
    /* Empty FIFO, so the interrupt line is low; the FCR write keeps the FIFO's contents. */
    outb(COM1 + REG_FCR, FCR_ENABLE | trigger_bits(len - i));
    if (!(inb(COM1 + REG_LSR) & LSR_DATA_READY)) wait_for_interrupt();
  }
}

void serial_write(const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    while (!(inb(COM1 + REG_LSR) & LSR_THR_EMPTY)) cpu_relax();
    size_t n = len < TX_FIFO_BYTES ? len : TX_FIFO_BYTES;
    outsb(COM1 + REG_DATA, p, n);
    p += n;
    len -= n;
  }
}
