/* echo: answers with the request body, keeping its Content-Type. The smallest useful
 * function, used by the tests and benchmarks as the cost floor of an invocation. */
#include "faasvisor/function.h"

int handle(const struct fv_request *req, struct fv_response *resp) {
  resp->status = 200;
  resp->body = req->body;
  resp->body_len = req->body_len;
  /* The value is a view into the request (not NUL-terminated), so it is placed directly
   * rather than through fv_response_set_header(); it stays valid until the SDK has sent the
   * response. */
  const struct fv_str *content_type = fv_header_get(req, "Content-Type");
  if (content_type != NULL) {
    static const char k_name[] = "Content-Type";
    resp->headers[0].name = (struct fv_str){k_name, sizeof k_name - 1};
    resp->headers[0].value = *content_type;
    resp->header_count = 1;
  }
  return 0;
}
