// A file as a response body (GET /system/images/DIGEST: an image's layout tar, for peers;
// docs/cluster.md). Everything on the ring: OPENAT, then READ one chunk at a time into the
// connection's output; the next READ is armed only once that output has gone to the
// kernel's send, so a slow reader pushes back and the node holds at most two chunks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include "server/connection.h"
#include "server/node_impl.h"
#include "util/log.h"

namespace faasvisor {
namespace {
constexpr size_t kFileChunkBytes = 256 * 1024;
}  // namespace

void Connection::send_file(std::string path, std::string_view content_type, std::string missing) {
  assert(request_active_ && !file_op_.in_flight && file_fd_ < 0);
  file_path_ = std::move(path);  // read by the kernel until the OPENAT's CQE
  file_missing_ = std::move(missing);
  file_type_ = std::string(content_type);
  node_.ring->openat(file_op_, AT_FDCWD, file_path_.c_str(), O_RDONLY | O_CLOEXEC, 0);
}

void Connection::close_file() {
  if (file_fd_ >= 0) ::close(file_fd_);
  file_fd_ = -1;
  file_left_ = 0;
  std::vector<char>().swap(file_chunk_);
}

void Connection::read_file_chunk() {
  if (file_fd_ < 0 || file_op_.in_flight || !out_.empty() || closing_) return;
  file_chunk_.resize(static_cast<size_t>(std::min<uint64_t>(file_left_, kFileChunkBytes)));
  node_.ring->read(file_op_, file_fd_, file_chunk_.data(), file_chunk_.size());
}

void Connection::on_file(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Connection>();
  bool opening = self.file_fd_ < 0;
  if (self.closing_) {
    if (opening && result >= 0) ::close(result);
    self.close_file();
    return self.maybe_free();
  }
  if (opening) {
    struct stat st{};
    if (result < 0 || fstat(result, &st) < 0 || !S_ISREG(st.st_mode)) {
      if (result >= 0) ::close(result);
      if (result == -ENOENT) self.respond_error(404, self.file_missing_);
      else self.respond_error(500, "cannot read " + self.file_path_ + ": " + std::strerror(result < 0 ? -result : EINVAL));
      self.process_input();
      self.arm_recv();
      return;
    }
    self.file_fd_ = result;
    self.file_left_ = static_cast<uint64_t>(st.st_size);
    self.append_status_line(200);
    self.out_ += "Content-Type: " + self.file_type_ + "\r\nContent-Length: " + std::to_string(self.file_left_);
    self.out_ += self.keep_alive_ ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
  } else if (result <= 0) {
    // The head promised a length the file no longer gives: only closing says so.
    FV_WARN("sending %s: %s", self.file_path_.c_str(), result < 0 ? std::strerror(-result) : "the file got shorter");
    self.close();
    return self.maybe_free();
  } else {
    self.out_.append(self.file_chunk_.data(), static_cast<size_t>(result));
    self.file_left_ -= std::min<uint64_t>(self.file_left_, static_cast<uint64_t>(result));
  }
  if (self.file_left_ == 0) {
    self.close_file();
    self.finish_request();  // flushes the rest
    self.process_input();
    self.arm_recv();
    return;
  }
  self.flush();
  self.read_file_chunk();  // at once if the output went to the kernel; else from on_send
}

}  // namespace faasvisor
