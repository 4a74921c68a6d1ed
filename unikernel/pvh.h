/* The PVH boot ABI's start-of-day structures (Xen's arch-x86/hvm/start_info.h, version 1),
 * as QEMU's qboot and Firecracker fill them in. */
#ifndef FAASVISOR_UNIKERNEL_PVH_H
#define FAASVISOR_UNIKERNEL_PVH_H

#include <stdint.h>

#define PVH_START_MAGIC 0x336ec578u
#define PVH_MEMMAP_RAM 1u

struct pvh_start_info {
  uint32_t magic;
  uint32_t version; /* the memory map fields exist from version 1 */
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};

struct pvh_memmap_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};

#endif
