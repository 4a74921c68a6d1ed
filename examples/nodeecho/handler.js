'use strict';
/* nodeecho: the Node.js twin of examples/echo, run by runtimes/node/faasvisor_runtime.js.
 *
 * Answers with the request body, keeping its Content-Type. */

exports.handle = (req) => {
  const contentType = req.header('Content-Type');
  const headers = contentType === undefined ? {} : { 'Content-Type': contentType };
  return { status: 200, headers, body: req.body };
};
