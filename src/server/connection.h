// One HTTP/1.1 client connection on the ring: receive, parse (one request at a time, so
// pipelined requests are answered in order), act, send. It owns a receive completion, a
// send completion and an idle timer, and is freed only once neither completion is in flight.
#pragma once

#include <string>
#include <vector>

#include "api/deploy.h"
#include "async/calls.h"
#include "http/parser.h"
#include "image/store.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/invocation.h"
#include "pool/logbook.h"
#include "store/store.h"
#include "util/intrusive_list.h"

namespace faasvisor {
struct NodeImpl;

class Connection final : public pool::InvocationSink,
                         public pool::LogFollower,
                         public image::Waiter,
                         public async::AcceptWaiter,
                         public http::BodyPolicy {
 public:
  Connection(NodeImpl &node, int fd);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  void start();
  // Graceful: finish the request in progress (if any), then close.
  void close_when_idle();
  // Immediate: abandon everything and close.
  void close();
  bool busy() const { return request_active_; }
  // Frees the connection if it is closed and no completion is in flight. Callers outside
  // the connection's own callbacks call it after close().
  void maybe_free();

  // The request handlers answer through these. Each completes the current request.
  void respond(int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {});
  void respond_error(int status, std::string_view message, std::string_view extra_headers = {});

  void invocation_done(pool::Invocation &inv, const pool::InvocationResult &result) override;

  // A streamed response (chunked): the request stays active until end_stream() or the
  // client leaves. Used by GET /system/logs?follow=true.
  void start_stream(int status, std::string_view content_type);
  void stream(std::string_view data);
  void end_stream();
  // Follows a function's log until the client goes away or the function is deleted.
  void follow(pool::LogBook &book, std::string function_name, std::string namespace_name);
  void log_line(const pool::LogEntry &entry) override;
  void log_ended() override;
  // A deploy waiting for its OCI image: the request stays active until the image is ready.
  void await_image(std::shared_ptr<FunctionSpec> spec, bool update);
  void image_ready(Result<image::Resolved> &result, bool image_fault) override;
  // POST /system/images (docs/images.md): the body streams to an image helper's stdin as it
  // arrives, never held whole. stream_limit decides at the head; finish_upload runs once the
  // whole body is parsed, and the request is answered when the helper has unpacked it.
  uint64_t stream_limit(const http::Request &head) override;
  void finish_upload();
  bool upload_streamed() const { return parser_.streaming(); }
  // GET /system/images/DIGEST (server/file_send.cc): the file at `path` as the response
  // body, opened and read on the ring one chunk at a time, the next read only once the
  // output has drained, so the node holds at most two chunks of it. 404 with `missing` if
  // there is no such file.
  void send_file(std::string path, std::string_view content_type, std::string missing);
  // DELETE /system/images/DIGEST: answered when the helper has removed it.
  void await_removal() { removing_ = true; }
  // A change waiting to be durable: the returned Done answers the current request with
  // `status` and `body` once the store reports it (500 with `failure` and the store's error
  // if it failed), unless the client has gone or the connection is gone by then.
  store::Done durable_reply(int status, std::string body,
                            std::string failure = "the change is in effect but could not be made durable");
  // An async call waiting to be durable: the request stays active until it is (202) or
  // could not be made so.
  void await_call(async::Call &call) { awaiting_call_ = &call; }
  void call_accepted(std::string_view call_id) override;
  void call_failed(int status, std::string_view message) override;

  ListHook node_hook;

 private:
  static void on_recv(io::Completion &c, int result, uint32_t flags);
  static void on_send(io::Completion &c, int result, uint32_t flags);
  static void on_idle(io::Timer &t);
  static void on_upload_write(io::Completion &c, int result, uint32_t flags);
  static void on_file(io::Completion &c, int result, uint32_t flags);
  void read_file_chunk();
  void close_file();
  bool stream_upload();
  void start_upload_helper();  // false: a write to the helper is in flight, feed no more
  void write_upload();
  void end_upload_input();
  void answer_upload();

  void arm_recv();
  void process_input();
  void handle_request();
  void finish_request();
  void append_status_line(int status);
  void flush();
  // Hostile clients (docs/security.md): a client that pipelines requests but never reads the
  // answers is not read from while this much output waits; a request's head and body have
  // deadlines of their own, however slowly the bytes trickle in.
  bool output_backlogged() const;
  void rearm_deadline();
  const char *deadline_expired_because() const;

  NodeImpl &node_;
  int fd_;
  io::Completion recv_op_{}, send_op_{};
  io::Timer idle_timer_;
  std::vector<char> in_;
  size_t in_start_ = 0;  // in_[in_start_..in_len_) is received but not yet parsed
  size_t in_len_ = 0;
  std::string out_;      // responses waiting to be sent
  std::string sending_;  // the bytes the kernel is sending now; stable until the CQE
  size_t sent_ = 0;
  http::RequestParser parser_;
  pool::Invocation invocation_;
  bool request_active_ = false;
  bool keep_alive_ = true;
  bool close_after_send_ = false;
  bool closing_ = false;
  bool processing_ = false;  // inside process_input (asserted never re-entered)
  bool freed_ = false;
  bool streaming_ = false;
  bool parse_failed_ = false;
  uint64_t head_started_ns_ = 0;  // first byte of the request being received, 0 if none
  uint64_t body_started_ns_ = 0;  // end of its head, 0 until then
  pool::LogBook *following_ = nullptr;
  // An upload in progress: the helper's stdin, the chunk being written (read by the kernel
  // until upload_op_'s CQE), and the helper's answer once it has one.
  int upload_fd_ = -1;
  io::Completion upload_op_{};
  std::string upload_chunk_;
  size_t upload_written_ = 0;
  // A file being sent (send_file): its fd, the bytes still to send, the chunk the kernel is
  // reading into until file_op_'s CQE.
  io::Completion file_op_{};
  int file_fd_ = -1;
  uint64_t file_left_ = 0;
  std::string file_path_, file_missing_, file_type_;
  std::vector<char> file_chunk_;
  bool removing_ = false;
  bool uploading_ = false;        // a helper was started (or failed to start) for this body
  bool upload_dropping_ = false;  // the helper stopped reading: the rest of the body is dropped
  bool upload_body_done_ = false; // finish_upload ran: close the helper's stdin once written
  bool upload_answered_ = false;  // the helper's answer is in upload_status_/upload_body_
  int upload_status_ = 0;
  std::string upload_body_;
  std::shared_ptr<FunctionSpec> pending_deploy_;
  bool pending_update_ = false;
  async::Call *awaiting_call_ = nullptr;
  std::string follow_name_, follow_namespace_;
  uint64_t request_seq_ = 0;  // counts requests, so a late durable_reply finds its own
  std::shared_ptr<char> life_ = std::make_shared<char>();  // durable_reply's weak handle
};

}  // namespace faasvisor
