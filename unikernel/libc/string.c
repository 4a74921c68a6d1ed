/* <string.h> for the unikernel (include/string.h). Built with
 * -fno-tree-loop-distribute-patterns so GCC does not turn these loops back into calls to
 * themselves. memcpy and memset use rep movsb / rep stosb: one instruction for any length. */
#include <stdint.h>
#include <string.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t len) {
  void *d = dst;
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(len) : : "memory");
  return dst;
}

void *memmove(void *dst, const void *src, size_t len) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  if ((uintptr_t)d - (uintptr_t)s >= len) return memcpy(dst, src, len); /* no overlap ahead */
  while (len > 0) {
    len--;
    d[len] = s[len];
  }
  return dst;
}

void *memset(void *dst, int c, size_t len) {
  void *d = dst;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(len) : "a"(c) : "memory");
  return dst;
}

int memcmp(const void *a, const void *b, size_t len) {
  const unsigned char *x = a;
  const unsigned char *y = b;
  for (size_t i = 0; i < len; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

void *memchr(const void *s, int c, size_t len) {
  const unsigned char *p = s;
  for (size_t i = 0; i < len; i++)
    if (p[i] == (unsigned char)c) return (void *)(p + i);
  return NULL;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}
