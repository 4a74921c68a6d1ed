/* The unikernel's C library: the few <string.h> functions that the SDK (src/sdk), the frame
 * codec and the example functions use, and that compilers emit calls to. No host libc goes
 * into an image: unikernel sources compile with -nostdinc and find this header instead. */
#ifndef FAASVISOR_UNIKERNEL_STRING_H
#define FAASVISOR_UNIKERNEL_STRING_H

#include <stddef.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t len);
void *memmove(void *dst, const void *src, size_t len);
void *memset(void *dst, int c, size_t len);
int memcmp(const void *a, const void *b, size_t len);
void *memchr(const void *s, int c, size_t len);
size_t strlen(const char *s);

#endif
