/* Boot: the PVH entry point, long mode, then C (uk_main in kernel.c).
 *
 * A PVH loader (QEMU's -kernel with microvm's qboot, Firecracker) loads this ELF at its
 * physical addresses, finds the entry in the XEN_ELFNOTE_PHYS32_ENTRY note, and enters it in
 * 32-bit protected mode with paging off, flat segments, and %ebx pointing at struct
 * hvm_start_info (pvh.h). There is no stack and no BSS clearing: both are done here. */

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define CR0_PE (1 << 0)
#define CR0_MP (1 << 1)
#define CR0_EM (1 << 2)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define CR4_OSFXSR (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define PTE_PRESENT 0x1
#define PTE_WRITE 0x2
#define PTE_WRITE_THROUGH 0x8
#define PTE_CACHE_DISABLE 0x10
#define PTE_LARGE 0x80
#define MMIO_PTE (PTE_PRESENT + PTE_WRITE + PTE_WRITE_THROUGH + PTE_CACHE_DISABLE + PTE_LARGE)
#define LAPIC_BASE 0xfee00000
#define LAPIC_EOI (LAPIC_BASE + 0xb0)
#define CODE_SELECTOR 0x08
#define DATA_SELECTOR 0x10
#define STACK_BYTES (64 * 1024)
#define EXCEPTION_STACK_BYTES (8 * 1024)

/* The PVH note. QEMU reads the descriptor as a 64-bit value right after the 4-byte-aligned
 * name (as Linux writes it), Firecracker as 32 bits: a .quad satisfies both. The PT_NOTE
 * segment must be 4-byte aligned for QEMU to find the descriptor (link.ld). */
  .section .note.xen, "a"
  .p2align 2
  .long 4                          /* name size: "Xen\0" */
  .long 8                          /* descriptor size */
  .long XEN_ELFNOTE_PHYS32_ENTRY
  .asciz "Xen"
  .p2align 2
  .quad pvh_start32

  .section .text.boot, "ax"
  .code32
  .globl pvh_start32
pvh_start32:
  cli
  cld
  mov %ebx, %esi                   /* hvm_start_info, kept in %esi until uk_main */

  /* BSS holds the page tables and the stacks: clear it before using them. */
  mov $__bss_start, %edi
  mov $__bss_end, %ecx
  sub %edi, %ecx
  xor %eax, %eax
  rep stosb

  /* Identity map of the first 1 GiB: PML4[0] -> PDPT[0] -> PD; PD[0] -> PT of 4 KiB pages
   * for the first 2 MiB (so page 0 and the stack guard page can be left unmapped), 2 MiB
   * pages above. */
  movl $(uk_pdpt + PTE_PRESENT + PTE_WRITE), uk_pml4
  movl $(uk_pd + PTE_PRESENT + PTE_WRITE), uk_pdpt
  movl $(uk_pt + PTE_PRESENT + PTE_WRITE), uk_pd
  mov $1, %ecx
1:
  mov %ecx, %eax
  shl $21, %eax
  or $(PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
  mov %eax, uk_pd(, %ecx, 8)
  inc %ecx
  cmp $512, %ecx
  jb 1b
  mov $1, %ecx                     /* PT[0] stays zero: a NULL dereference faults */
2:
  mov %ecx, %eax
  shl $12, %eax
  or $(PTE_PRESENT + PTE_WRITE), %eax
  mov %eax, uk_pt(, %ecx, 8)
  inc %ecx
  cmp $512, %ecx
  jb 2b
  mov $uk_stack_guard, %eax        /* a stack overflow faults instead of corrupting BSS */
  shr $12, %eax
  movl $0, uk_pt(, %eax, 8)
  /* The fourth GiB, devices only (microvm's RAM below 4 GiB ends at 3 GiB): the
   * virtio-mmio windows, the I/O APIC and the local APIC, as uncached 2 MiB pages.
   * PDPT[3] -> a PD mapping 0xc0000000 + i * 2 MiB for every i. */
  movl $(uk_pd_mmio + PTE_PRESENT + PTE_WRITE), uk_pdpt + 3 * 8
  xor %ecx, %ecx
5:
  mov %ecx, %eax
  shl $21, %eax
  add $(0xc0000000 + MMIO_PTE), %eax
  mov %eax, uk_pd_mmio(, %ecx, 8)
  inc %ecx
  cmp $512, %ecx
  jb 5b

  /* Long mode: PAE, page tables, EFER.LME, paging. SSE on (no x87 emulation, FXSR), so
   * compiled C may use SSE registers. */
  mov %cr4, %eax
  or $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
  mov %eax, %cr4
  mov $uk_pml4, %eax
  mov %eax, %cr3
  mov $MSR_EFER, %ecx
  rdmsr
  or $EFER_LME, %eax
  wrmsr
  mov %cr0, %eax
  and $~CR0_EM, %eax
  or $(CR0_PG | CR0_MP | CR0_PE), %eax
  mov %eax, %cr0
  lgdt uk_gdt_pointer
  ljmp $CODE_SELECTOR, $start64

  .code64
start64:
  mov $DATA_SELECTOR, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  mov %ax, %fs
  mov %ax, %gs
  mov $uk_stack_top, %rsp
  mov %esi, %edi                   /* uk_main(const struct hvm_start_info *) */
  call uk_main
3:
  hlt                              /* uk_main does not return */
  jmp 3b

/* Exception stubs, one per vector 0..31, each 16 bytes apart (kernel.c computes their
 * addresses). Each pushes an error code (0 for vectors where the CPU pushes none) and the
 * vector, so uk_exception sees one frame layout. */
  .p2align 4
  .globl uk_exception_stubs
uk_exception_stubs:
  .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
  .p2align 4
  .if \vector != 8 && \vector != 10 && \vector != 11 && \vector != 12 && \vector != 13 && \vector != 14 && \vector != 17 && \vector != 21 && \vector != 29 && \vector != 30
  pushq $0
  .endif
  pushq $\vector
  jmp exception_common
  .endr

/* A device's interrupt (COM1's, the virtio console's) only wakes the CPU from hlt (the code
 * that halted looks at its device): it acknowledges the local APIC and returns. Interrupts
 * are enabled only around that hlt. */
  .p2align 4
  .globl uk_irq_wakeup
uk_irq_wakeup:
  push %rax
  mov $LAPIC_EOI, %eax
  movl $0, (%rax)
  pop %rax
  iretq

/* The local APIC's spurious vector needs no acknowledgement. */
  .p2align 4
  .globl uk_irq_spurious
uk_irq_spurious:
  iretq

exception_common:
  mov %rsp, %rdi                   /* struct uk_trap_frame * */
  and $-16, %rsp
  call uk_exception                /* does not return */
4:
  hlt
  jmp 4b

  .section .data
  .p2align 3
/* Writable: the CPU sets accessed and busy bits in descriptors. Null, 64-bit code, data, and room for the TSS descriptor (16 bytes) that kernel.c fills
 * in to give the fault handlers a stack of their own. */
  .globl uk_gdt
uk_gdt:
  .quad 0
  .quad 0x00af9a000000ffff
  .quad 0x00cf92000000ffff
  .quad 0, 0
uk_gdt_end:
uk_gdt_pointer:
  .word uk_gdt_end - uk_gdt - 1
  .long uk_gdt

  .section .bss.pagetables, "aw", @nobits
  .p2align 12
uk_pml4: .skip 4096
uk_pdpt: .skip 4096
uk_pd: .skip 4096
uk_pt: .skip 4096
uk_pd_mmio: .skip 4096

  .section .bss.stack, "aw", @nobits
  .p2align 12
  .globl uk_stack_guard
uk_stack_guard: .skip 4096
uk_stack: .skip STACK_BYTES
  .globl uk_stack_top
uk_stack_top:
  .p2align 4
  .globl uk_exception_stack_top
uk_exception_stack: .skip EXCEPTION_STACK_BYTES
uk_exception_stack_top:

  .section .note.GNU-stack, "", @progbits
