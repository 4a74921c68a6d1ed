/* COM1, an 8250/16550 UART at I/O port 0x3f8: the console for crash reports, and the
 * protocol's stream when QEMU gives no virtio console (platform.c). QEMU (-serial stdio) and
 * Firecracker connect it to the VMM's stdin/stdout, 8-bit clean. */
#ifndef FAASVISOR_UNIKERNEL_SERIAL_H
#define FAASVISOR_UNIKERNEL_SERIAL_H

#include <stddef.h>

/* 8N1, FIFOs on, the receive interrupt on (it only ends a halt: serial_read). */
void serial_init(void);

/* Blocks until len bytes have arrived (a serial line has no end of stream). */
void serial_read(void *buf, size_t len);

/* Blocks until all len bytes are in the UART. */
void serial_write(const void *buf, size_t len);

#endif
