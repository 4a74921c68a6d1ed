/* fault: a test function for the unikernel that crashes the guest on demand (?mode=...).
 * Freestanding: it builds only into BUILD/unikernel/fault.uk.
 *
 *   ok        echo the body (also the default)
 *   null      write through a NULL pointer (page fault)
 *   overflow  recurse until the stack runs into its guard page
 *   ud2       execute an invalid instruction
 *   hang      spin forever with interrupts on (the node's timeout must end the guest)
 */
#include <stddef.h>

#include "faasvisor/function.h"

/* Each frame keeps a page-sized array alive so the recursion reaches the guard page fast
 * and the compiler cannot turn it into a loop. */
static unsigned recurse(unsigned depth) {
  volatile unsigned char pad[4096];
  if (depth > (1u << 30)) return 0; /* never reached: a 64 KiB stack ends far sooner */
  pad[depth % sizeof pad] = (unsigned char)depth;
  return recurse(depth + 1) + pad[0];
}

int handle(const struct fv_request *req, struct fv_response *resp) {
  if (fv_query_is(req, "mode", "null")) {
    volatile int *volatile p = NULL;
    *p = 1;
  } else if (fv_query_is(req, "mode", "overflow")) {
    resp->status = (int)recurse(0);
  } else if (fv_query_is(req, "mode", "ud2")) {
    __asm__ volatile("ud2");
  } else if (fv_query_is(req, "mode", "hang")) {
    for (;;) __asm__ volatile("pause");
  }
  resp->body = req->body;
  resp->body_len = req->body_len;
  return 0;
}
