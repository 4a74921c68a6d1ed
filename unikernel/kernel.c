/* The unikernel's C entry and machine setup: fault handlers, interrupts, the serial port,
 * the heap from the PVH memory map, the protocol's stream; then the function SDK's instance
 * loop (src/sdk/serve.c), and the way out of the VM. */
#include "kernel.h"

#include <stdint.h>
#include <string.h>

#include "faasvisor/frame.h"
#include "io.h"
#include "platform.h"
#include "pvh.h"
#include "serial.h"

/* From link.ld and boot.S. */
extern char __image_start[], __image_end[];
extern char uk_exception_stubs[], uk_exception_stack_top[], uk_stack_guard[];
extern char uk_irq_wakeup[], uk_irq_spurious[];
extern uint64_t uk_gdt[];

#define CODE_SELECTOR 0x08
#define TSS_SELECTOR 0x18
#define EXCEPTION_STUB_BYTES 16
#define EXCEPTION_VECTORS 32
#define IDT_VECTORS 64
#define SPURIOUS_VECTOR 0x3f
#define SERIAL_IRQ 4 /* COM1's ISA interrupt: I/O APIC pin 4 on microvm and Firecracker */

/* xAPIC registers (boot.S maps both pages). */
#define IOAPIC_BASE 0xfec00000u
#define IOAPIC_SELECT 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_VERSION 0x01
#define IOAPIC_REDIRECTION(pin) (0x10 + 2 * (pin))
#define LAPIC_BASE 0xfee00000u
#define LAPIC_ID 0x20
#define LAPIC_TPR 0x80
#define LAPIC_SVR 0xf0
#define LAPIC_SVR_ENABLE 0x100
#define PAGE_BYTES 4096u

/* RAM the heap may use: above page 0 (unmapped) and below the legacy hole at 640 KiB, and
 * from the end of the image to the end of boot.S's identity map. */
#define LOW_RAM_START 0x1000u
#define LOW_RAM_END 0x9f000u
#define MAPPED_END (1ull << 30)
/* Without a PVH memory map (a loader that gives version 0): the least RAM QEMU gives. */
#define FALLBACK_RAM_END 0x200000u
#define MAX_MEMMAP_ENTRIES 32u
#define MAX_CMDLINE_BYTES 4096u

#define ISA_DEBUG_EXIT_PORT 0x501    /* QEMU's default for -device isa-debug-exit */
#define ISA_DEBUG_EXIT_PORT_ALT 0xf4 /* the customary iobase=0xf4 */
#define I8042_COMMAND_PORT 0x64
#define I8042_RESET 0xfe

struct uk_heap uk_heap;

/* ---- leaving the VM ---- */

static _Noreturn void triple_fault(void) {
  /* An empty IDT turns the breakpoint into #GP, #DF, then a triple fault (a reset, which
   * QEMU with -no-reboot turns into an exit). */
  static const struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
  } empty = {0, 0};
  __asm__ volatile("lidt %0\n\tint3" : : "m"(empty));
  for (;;) __asm__ volatile("cli\n\thlt");
}

void uk_exit(int code) {
  outb(ISA_DEBUG_EXIT_PORT, (uint8_t)code);
  outb(ISA_DEBUG_EXIT_PORT_ALT, (uint8_t)code);
  outb(I8042_COMMAND_PORT, I8042_RESET);
  triple_fault();
}

/* ---- logging ---- */

void uk_log(const char *const *parts, size_t count) {
  uint32_t len = 0;
  for (size_t i = 0; i < count; i++) len += (uint32_t)strlen(parts[i]);
  uint8_t header[FV_FRAME_HEADER_SIZE];
  fv_frame_header_write(header, FV_FRAME_LOG, len);
  fv_platform_write(header, sizeof header);
  for (size_t i = 0; i < count; i++) fv_platform_write(parts[i], strlen(parts[i]));
}

void uk_report(const char *const *parts, size_t count) {
  if (!uk_stream_is_virtio()) {
    uk_log(parts, count);
    return;
  }
  for (size_t i = 0; i < count; i++) serial_write(parts[i], strlen(parts[i]));
  serial_write("\n", 1);
}

/* "0x" and 16 hex digits, NUL-terminated. */
static const char *hex64(uint64_t v, char out[19]) {
  static const char digits[] = "0123456789abcdef";
  out[0] = '0';
  out[1] = 'x';
  for (int i = 0; i < 16; i++) out[2 + i] = digits[(v >> (60 - 4 * i)) & 0xf];
  out[18] = '\0';
  return out;
}

/* ---- CPU exceptions: report and end the VM ---- */

/* What boot.S's stubs and the CPU pushed, from the handler's stack pointer up. */
struct uk_trap_frame {
  uint64_t vector;
  uint64_t error_code;
  uint64_t rip;
  uint64_t cs;
  uint64_t rflags;
  uint64_t rsp;
  uint64_t ss;
};

static const char *const k_exception_names[EXCEPTION_VECTORS] = {"divide error",
                                                                 "debug",
                                                                 "NMI",
                                                                 "breakpoint",
                                                                 "overflow",
                                                                 "bound range exceeded",
                                                                 "invalid opcode",
                                                                 "device not available",
                                                                 "double fault",
                                                                 "coprocessor segment overrun",
                                                                 "invalid TSS",
                                                                 "segment not present",
                                                                 "stack-segment fault",
                                                                 "general protection fault",
                                                                 "page fault",
                                                                 "reserved",
                                                                 "x87 floating-point error",
                                                                 "alignment check",
                                                                 "machine check",
                                                                 "SIMD floating-point error",
                                                                 "virtualization exception",
                                                                 "control protection fault",
                                                                 "reserved",
                                                                 "reserved",
                                                                 "reserved",
                                                                 "reserved",
                                                                 "reserved",
                                                                 "reserved",
                                                                 "hypervisor injection",
                                                                 "VMM communication",
                                                                 "security exception",
                                                                 "reserved"};

_Noreturn void uk_exception(const struct uk_trap_frame *frame);

void uk_exception(const struct uk_trap_frame *frame) {
  static int active;
  if (active++) triple_fault(); /* a fault while reporting one */
  uint64_t fault_address;
  __asm__ volatile("mov %%cr2, %0" : "=r"(fault_address));
  const char *what = k_exception_names[frame->vector % EXCEPTION_VECTORS];
  if (frame->vector == 14 && fault_address >= (uintptr_t)uk_stack_guard &&
      fault_address < (uintptr_t)uk_stack_guard + PAGE_BYTES)
    what = "stack overflow";
  else if (frame->vector == 14 && fault_address < PAGE_BYTES)
    what = "page fault (NULL dereference)";
  char rip[19], address[19], error[19];
  const char *parts[] = {"faasvisor unikernel: CPU exception: ",
                         what,
                         " at rip ",
                         hex64(frame->rip, rip),
                         ", address ",
                         hex64(fault_address, address),
                         ", error code ",
                         hex64(frame->error_code, error)};
  uk_report(parts, sizeof parts / sizeof parts[0]);
  uk_exit(UK_EXIT_CRASH);
}

struct __attribute__((packed)) tss64 {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iomap_base;
};

struct idt_gate {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attributes;
  uint16_t offset_middle;
  uint32_t offset_high;
  uint32_t reserved;
};

static struct idt_gate idt[IDT_VECTORS];

static void set_gate(int vector, const void *handler_ptr, uint8_t ist) {
  uint64_t handler = (uintptr_t)handler_ptr;
  idt[vector] = (struct idt_gate){
      .offset_low = (uint16_t)handler,
      .selector = CODE_SELECTOR,
      .ist = ist,
      .type_attributes = 0x8e, /* present, ring 0, interrupt gate */
      .offset_middle = (uint16_t)(handler >> 16),
      .offset_high = (uint32_t)(handler >> 32),
  };
}

/* Every exception runs on a stack of its own (IST 1 of the TSS), so a stack overflow into
 * the guard page can still be reported. Vectors without a gate (stray interrupts) fault
 * as "segment not present" and are reported too. */
static void traps_init(void) {
  static struct tss64 tss;
  tss.ist[0] = (uintptr_t)uk_exception_stack_top;
  tss.iomap_base = sizeof tss; /* no I/O permission bitmap */
  uint64_t base = (uintptr_t)&tss;
  uint64_t limit = sizeof tss - 1;
  uk_gdt[TSS_SELECTOR / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
                             (0x89ull << 40) /* present, 64-bit TSS */ |
                             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  uk_gdt[TSS_SELECTOR / 8 + 1] = base >> 32;
  __asm__ volatile("ltr %w0" : : "r"(TSS_SELECTOR));

  for (int i = 0; i < EXCEPTION_VECTORS; i++)
    set_gate(i, uk_exception_stubs + i * EXCEPTION_STUB_BYTES, 1);
  set_gate(UK_SERIAL_VECTOR, uk_irq_wakeup, 0);
  set_gate(UK_VIRTIO_VECTOR, uk_irq_wakeup, 0);
  set_gate(SPURIOUS_VECTOR, uk_irq_spurious, 0);
  struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
  } idtr = {sizeof idt - 1, (uintptr_t)idt};
  __asm__ volatile("lidt %0" : : "m"(idtr));
}

/* ---- interrupts: devices wake the CPU from hlt ---- */

static void mmio_write(uint32_t address, uint32_t value) {
  *(volatile uint32_t *)(uintptr_t)address = value;
}

static uint32_t mmio_read(uint32_t address) { return *(volatile uint32_t *)(uintptr_t)address; }

static uint32_t ioapic_read(uint32_t reg) {
  mmio_write(IOAPIC_BASE + IOAPIC_SELECT, reg);
  return mmio_read(IOAPIC_BASE + IOAPIC_WINDOW);
}

static void ioapic_write(uint32_t reg, uint32_t value) {
  mmio_write(IOAPIC_BASE + IOAPIC_SELECT, reg);
  mmio_write(IOAPIC_BASE + IOAPIC_WINDOW, value);
}

/* Edge-triggered even for virtio-mmio's level-triggered line: the driver acknowledges the
 * device before its last look and halt (virtio_console.c), so every buffer returned after
 * that is a new edge, and no handler needs to know the device. */
int uk_irq_route(uint32_t pin, uint8_t vector) {
  uint32_t pins = ((ioapic_read(IOAPIC_VERSION) >> 16) & 0xff) + 1;
  if (pin >= pins) return -1;
  uint32_t apic_id = mmio_read(LAPIC_BASE + LAPIC_ID) >> 24;
  ioapic_write(IOAPIC_REDIRECTION(pin) + 1, apic_id << 24);
  ioapic_write(IOAPIC_REDIRECTION(pin), vector); /* fixed, edge, active high, unmasked */
  return 0;
}

/* Local APIC on, COM1 (I/O APIC pin 4, an ISA interrupt) to its vector. Interrupts stay
 * disabled (IF=0) except inside wait_for_interrupt, so nothing runs asynchronously. */
static void interrupts_init(void) {
  mmio_write(LAPIC_BASE + LAPIC_SVR, LAPIC_SVR_ENABLE | SPURIOUS_VECTOR);
  mmio_write(LAPIC_BASE + LAPIC_TPR, 0);
  uk_irq_route(SERIAL_IRQ, UK_SERIAL_VECTOR);
}

/* ---- memory ---- */

/* Gives the heap the part of RAM [start, end) that lies within [lo, hi). */
static void add_clipped(uint64_t start, uint64_t end, uint64_t lo, uint64_t hi) {
  if (start < lo) start = lo;
  if (end > hi) end = hi;
  if (start < end) uk_heap_add(&uk_heap, (void *)(uintptr_t)start, (size_t)(end - start));
}

static void add_ram(uint64_t start, uint64_t end) {
  add_clipped(start, end, LOW_RAM_START, LOW_RAM_END);
  add_clipped(start, end, (uintptr_t)__image_end, MAPPED_END);
}

/* The heap is every RAM range of the PVH memory map minus the image. The map is copied
 * first: it may itself lie in RAM the heap takes. */
static void memory_init(const struct pvh_start_info *start_info) {
  static struct pvh_memmap_entry map[MAX_MEMMAP_ENTRIES];
  uint32_t entries = 0;
  uk_heap_init(&uk_heap);
  if (start_info != NULL && start_info->magic == PVH_START_MAGIC && start_info->version >= 1 &&
      start_info->memmap_paddr != 0 && start_info->memmap_paddr < MAPPED_END) {
    entries = start_info->memmap_entries;
    if (entries > MAX_MEMMAP_ENTRIES) entries = MAX_MEMMAP_ENTRIES;
    memcpy(map, (const void *)(uintptr_t)start_info->memmap_paddr, entries * sizeof map[0]);
  }
  int image_in_ram = entries == 0; /* without a map, trust the loader */
  for (uint32_t i = 0; i < entries; i++) {
    if (map[i].type != PVH_MEMMAP_RAM) continue;
    add_ram(map[i].addr, map[i].addr + map[i].size);
    if (map[i].addr <= (uintptr_t)__image_start &&
        map[i].addr + map[i].size >= (uintptr_t)__image_end)
      image_in_ram = 1;
  }
  if (!image_in_ram) {
    /* The loader placed the image, but its BSS (page tables, stacks, buffers) runs past the
     * end of RAM: writes there are lost. Refuse to serve rather than fail at random. */
    static const char *const parts[] = {
        "faasvisor unikernel: RAM ends inside the image: give the VM more memory"};
    uk_report(parts, 1);
    uk_exit(FV_EXIT_INIT);
  }
  if (uk_heap.total_bytes == 0) {
    static const char *const parts[] = {
        "faasvisor unikernel: no PVH memory map, assuming 2 MiB of RAM"};
    uk_report(parts, 1);
    add_ram(0, FALLBACK_RAM_END);
  }
}

/* ---- the protocol's stream ---- */

/* The PVH command line names the virtio devices QEMU gives the guest. Read before
 * memory_init: it may lie in RAM that becomes the heap. */
static void stream_init(const struct pvh_start_info *start_info) {
  if (start_info != NULL && start_info->magic == PVH_START_MAGIC &&
      start_info->cmdline_paddr != 0 && start_info->cmdline_paddr < MAPPED_END - MAX_CMDLINE_BYTES)
    uk_stream_probe((const char *)(uintptr_t)start_info->cmdline_paddr, MAX_CMDLINE_BYTES);
}

static void stream_start(void) {
  const char *why = uk_stream_start();
  if (why == NULL) return;
  const char *parts[] = {"faasvisor unikernel: the virtio console: ", why};
  uk_report(parts, 2);
  uk_exit(FV_EXIT_INIT);
}

/* ---- entry from boot.S ---- */

_Noreturn void uk_main(const struct pvh_start_info *start_info);

void uk_main(const struct pvh_start_info *start_info) {
  traps_init();
  interrupts_init();
  serial_init();
  stream_init(start_info);
  memory_init(start_info);
  stream_start();
  uk_exit(fv_serve());
}
