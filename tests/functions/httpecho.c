/* A static HTTP/1.1 echo server for faasvisor.mode http where no interpreter is (a microVM's
 * initramfs): `httpecho PORT` listens on 127.0.0.1:PORT, answers each request with its body
 * (Content-Length framing, keep-alive) and an X-Seen-Path header. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 20];

static void serve(int fd) {
  size_t have = 0;
  for (;;) {
    char *end = NULL;
    while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
      if (have == sizeof buf) return;
      ssize_t n = read(fd, buf + have, sizeof buf - have);
      if (n <= 0) return;
      have += (size_t)n;
    }
    size_t head = (size_t)(end - buf) + 4;
    size_t length = 0;
    char path[256] = "/";
    sscanf(buf, "%*s %255s", path);
    for (char *line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
      if (strncasecmp(line + 2, "Content-Length:", 15) == 0) length = strtoul(line + 17, NULL, 10);
    if (head + length > sizeof buf) return;
    while (have < head + length) {
      ssize_t n = read(fd, buf + have, head + length - have);
      if (n <= 0) return;
      have += (size_t)n;
    }
    char reply[512];
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Seen-Path: %s\r\n"
                     "Content-Length: %zu\r\n\r\n", path, length);
    if (write(fd, reply, (size_t)n) != n || write(fd, buf + head, length) != (ssize_t)length) return;
    memmove(buf, buf + head + length, have - head - length);
    have -= head + length;
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 8080;
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
    perror("httpecho: listen");
    return 1;
  }
  fprintf(stderr, "httpecho: listening on %d\n", port);
  for (;;) {
    int fd = accept(s, NULL, NULL);
    if (fd < 0) continue;
    serve(fd);
    close(fd);
  }
}
