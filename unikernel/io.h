/* x86 port I/O, and halting until an interrupt. */
#ifndef FAASVISOR_UNIKERNEL_IO_H
#define FAASVISOR_UNIKERNEL_IO_H

#include <stddef.h>
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}

/* Writes len bytes from data to one port (rep outsb): one instruction for a whole run. */
static inline void outsb(uint16_t port, const void *data, size_t len) {
  __asm__ volatile("rep outsb" : "+S"(data), "+c"(len) : "d"(port) : "memory");
}

static inline void cpu_relax(void) { __asm__ volatile("pause"); }

/* Halts until an interrupt. IF is set only across hlt (sti delays interrupts by one
 * instruction), so an interrupt raised since the caller last looked is taken by this hlt
 * rather than lost before it; interrupts stay off everywhere else, so no handler ever runs
 * beside the code that waits (boot.S's handler only acknowledges the local APIC). */
static inline void wait_for_interrupt(void) { __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory"); }

#endif
