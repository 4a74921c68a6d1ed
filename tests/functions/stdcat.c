/* A static classic-watchdog function for faasvisor.mode stdio where no interpreter is (a
 * microVM's initramfs): copies stdin to stdout, then writes Http_Method and Http_Path as a
 * last line; exits with the number in Http_Query "exit=N", if any. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
  char buf[65536];
  ssize_t n;
  while ((n = read(0, buf, sizeof buf)) > 0)
    if (write(1, buf, (size_t)n) != n) return 2;
  const char *method = getenv("Http_Method"), *path = getenv("Http_Path"), *query = getenv("Http_Query");
  printf("\n%s %s\n", method ? method : "-", path ? path : "-");
  fprintf(stderr, "stdcat: served %s\n", path ? path : "-");
  return query && strncmp(query, "exit=", 5) == 0 ? atoi(query + 5) : 0;
}
