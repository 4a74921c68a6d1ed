#include "pool/instance.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "faasvisor/frame.h"
#include "pool/function.h"
#include "pool/scheduler.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::pool {
namespace {

constexpr size_t kInitialReadBytes = 4096;
constexpr size_t kKeepBufferBytes = 64 * 1024;  // larger buffers are released when idle
constexpr size_t kLogTailBytes = 2048;
constexpr size_t kLogLineMax = 4096;
constexpr size_t kLogReadMaxBytes = 16384;
constexpr uint64_t kCleanupRetryNs = 20'000'000;
constexpr uint32_t kCleanupAttempts = 100;
// After end of output, how long the process has to exit before the instance is a fault. A
// sandbox removes its cgroups before it exits, which on a loaded cgroup v1 host can take
// a few hundred ms.
constexpr uint64_t kEofGraceNs = 1'000'000'000;

// Hop-by-hop headers are the connection's business, not the function's (RFC 9110 7.6.1).
bool hop_by_hop(std::string_view name) {
  static constexpr std::string_view kNames[] = {"connection", "keep-alive", "transfer-encoding",
                                                "te", "upgrade", "proxy-connection",
                                                "proxy-authorization", "trailer"};
  for (std::string_view h : kNames)
    if (iequals(name, h)) return true;
  return false;
}

// The RESPONSE view is large (128 header slots); the loop is single-threaded and uses it
// only between decode and delivery, so one instance of it serves every instance.
fv_response_view g_response_view;

}  // namespace

const char *to_string(InstanceState state) {
  switch (state) {
    case InstanceState::booting: return "booting";
    case InstanceState::warm: return "warm";
    case InstanceState::busy: return "busy";
    case InstanceState::stopping: return "stopping";
  }
  return "?";
}

Instance::Instance(Pool &pool, std::shared_ptr<Function> function, uint64_t id)
    : pool_(pool), function_(std::move(function)), id_(id), generation_(function_->generation()) {
  name_ = function_->name() + "-" + std::to_string(id);
  reserved_bytes_ = function_->spec().reservation_bytes;
  state_since_ns_ = monotonic_ns();
  console_preamble_ = function_->backend().console_preamble();
  function_->instances.push_back(*this);
  ++function_->booting;
  for (io::Completion *c : {&read_op_, &write_op_, &log_op_, &exit_op_}) c->owner = this;
  read_op_.callback = &Instance::on_read;
  write_op_.callback = &Instance::on_write;
  log_op_.callback = &Instance::on_log;
  exit_op_.callback = &Instance::on_exit;
  timer_.owner = this;
  timer_.callback = &Instance::on_timer;
  eof_timer_.owner = this;
  eof_timer_.callback = [](io::Timer &t) {
    auto &self = t.owner_as<Instance>();
    ++self.depth_;
    if (self.exit_pending_) self.finish_exit(true);
    else self.fault(self.out_of_memory_or("the instance ") + "closed its output" + self.log_tail());
    --self.depth_;
    self.maybe_release();
  };
}

Instance::~Instance() {
  assert(released_);
  uint64_t sent = 0, received = 0;
  if (network_traffic(&sent, &received)) {  // the last reading, before the lease goes back
    function_->stats.network_sent_bytes += sent;
    function_->stats.network_received_bytes += received;
  }
  if (out_has_secrets_) std::fill(out_.begin(), out_.end(), uint8_t{0});
  assert(!read_op_.in_flight && !write_op_.in_flight && !log_op_.in_flight && !exit_op_.in_flight);
  pool_.timers().stop(timer_);
  pool_.timers().stop(eof_timer_);
  close_streams();
}

bool Instance::finished() const {
  return state_ == InstanceState::stopping && reaped_ && cleaned_ && !read_op_.in_flight &&
         !write_op_.in_flight && !log_op_.in_flight && !exit_op_.in_flight && !meter_.busy();
}

void Instance::set_state(InstanceState next) {
  Function &fn = *function_;
  [[maybe_unused]] bool allowed = false;
  switch (state_) {
    case InstanceState::booting: allowed = next == InstanceState::warm || next == InstanceState::stopping; break;
    case InstanceState::warm: allowed = next == InstanceState::busy || next == InstanceState::stopping; break;
    case InstanceState::busy: allowed = next == InstanceState::warm || next == InstanceState::stopping; break;
    case InstanceState::stopping: allowed = false; break;
  }
  assert(allowed && "invalid instance state transition");
  auto counter = [&fn](InstanceState s) -> uint32_t & {
    switch (s) {
      case InstanceState::booting: return fn.booting;
      case InstanceState::warm: return fn.warm;
      case InstanceState::busy: return fn.busy;
      case InstanceState::stopping: break;
    }
    return fn.stopping;
  };
  --counter(state_);
  ++counter(next);
  // Close the interval spent in the state being left.
  uint64_t now = monotonic_ns();
  uint64_t spent = now > state_since_ns_ ? now - state_since_ns_ : 0;
  switch (state_) {
    case InstanceState::booting: fn.stats.boot_ns += spent; break;
    case InstanceState::warm:
      fn.stats.idle_ns += spent;
      fn.stats.idle_memory_byte_ns += static_cast<double>(spent) * static_cast<double>(memory_bytes_);
      break;
    case InstanceState::busy: fn.stats.busy_ns += spent; break;
    case InstanceState::stopping: break;
  }
  state_since_ns_ = now;
  state_ = next;
}

void Instance::sample_memory() {
  if (state_ == InstanceState::stopping) return;
  proc::MemoryFiles files = function_->backend().memory_files(launched_);
  if (!files.empty()) return meter_.start(pool_.ring(), std::move(files));
  auto usage = function_->backend().memory_usage(launched_);
  if (usage) memory_bytes_ = *usage;
}

void Instance::on_measured(MemoryMeter &meter, bool measured, uint64_t bytes) {
  auto &self = meter.owner_as<Instance>();
  if (measured && self.state_ != InstanceState::stopping) self.memory_bytes_ = bytes;
  self.maybe_release();  // the meter's chain may have been the last thing a stopped one waited for
}

Status Instance::start(uint64_t now_ns) {
  spawn_ns_ = now_ns;
  last_used_ns_ = now_ns;
  auto launched = function_->backend().launch(function_->spec(), name_);
  if (!launched) {
    Error error = launched.error();
    // Nothing was started: the instance goes straight to released.
    set_state(InstanceState::stopping);
    reaped_ = true;
    cleaned_ = true;
    pool_.instance_stopping(*this, true, error.message());
    maybe_release();
    return error;
  }
  launched_ = std::move(*launched);
  FV_DEBUG("instance %s: started, pid %d", name_.c_str(), launched_.child.pid());
  in_.resize(kInitialReadBytes);
  arm_read();
  arm_log();
  if (!launched_.initial_input.empty()) {
    // Before READY the stream is ours alone: nothing else is written until this is done.
    // The rest of the backend's first message may hold secrets: wiped here and once sent.
    out_.assign(launched_.initial_input.begin(), launched_.initial_input.end());
    secrets::wipe(launched_.initial_input);
    out_sent_ = 0;
    out_has_secrets_ = true;
    write_more();
  }
  pool_.ring().poll(exit_op_, launched_.child.pidfd(), POLLIN);
  timer_purpose_ = TimerPurpose::boot;
  pool_.timers().start(timer_, now_ns + function_->spec().boot_timeout_ms * 1'000'000ull);
  return {};
}

void Instance::assign(Invocation &inv, uint64_t now_ns, bool cold) {
  assert(state_ == InstanceState::warm);
  assert(current_ == nullptr && !current_abandoned_);
  if (warm_hook.linked()) function_->warm_list.remove(*this);
  set_state(InstanceState::busy);
  current_ = &inv;
  current_cold_ = cold;
  current_waited_ns_ = now_ns > inv.arrival_ns ? now_ns - inv.arrival_ns : 0;
  inv.instance = this;
  last_used_ns_ = now_ns;

  // Encode the REQUEST frame: header, then the payload in protocol order.
  size_t payload = 4 + inv.method.size() + 4 + inv.path.size() + 4 + inv.query.size() + 4 + 4 +
                   inv.body.size();
  uint32_t header_count = 0;
  for (const Header &h : inv.headers) {
    if (hop_by_hop(h.name) || header_count == FV_FRAME_MAX_HEADERS) continue;
    payload += 8 + h.name.size() + h.value.size();
    ++header_count;
  }
  out_.resize(FV_FRAME_HEADER_SIZE + payload);
  out_sent_ = 0;
  uint8_t *p = out_.data();
  fv_frame_header_write(p, FV_FRAME_REQUEST, static_cast<uint32_t>(payload));
  p += FV_FRAME_HEADER_SIZE;
  p = fv_put_str(p, inv.method.data(), static_cast<uint32_t>(inv.method.size()));
  p = fv_put_str(p, inv.path.data(), static_cast<uint32_t>(inv.path.size()));
  p = fv_put_str(p, inv.query.data(), static_cast<uint32_t>(inv.query.size()));
  p = fv_put_u32(p, header_count);
  uint32_t written = 0;
  for (const Header &h : inv.headers) {
    if (hop_by_hop(h.name) || written == header_count) continue;
    p = fv_put_str(p, h.name.data(), static_cast<uint32_t>(h.name.size()));
    p = fv_put_str(p, h.value.data(), static_cast<uint32_t>(h.value.size()));
    ++written;
  }
  p = fv_put_str(p, inv.body.data(), static_cast<uint32_t>(inv.body.size()));
  assert(p == out_.data() + out_.size());
  write_more();

  // The execution deadline belongs to the instance, so it holds even if the client leaves.
  uint64_t deadline = inv.arrival_ns + function_->spec().timeout_ms * 1'000'000ull;
  timer_purpose_ = TimerPurpose::exec;
  pool_.timers().start(timer_, std::max(deadline, now_ns + 1'000'000));
}

// SIGKILL after the backend's kill signal is the last resort: a supervisor killed outright
// leaves its own children orphaned (the process backend's outer stem reaps the sandbox's
// init when it handles its kill signal). So it waits at least kMinLastResortNs, however
// short the stop grace, for a loaded machine to finish that reaping.
uint64_t Instance::last_resort_delay_ns() const {
  constexpr uint64_t kMinLastResortNs = 5'000'000'000;
  return std::max<uint64_t>(pool_.options().stop_grace_ms * 1'000'000, kMinLastResortNs);
}

void Instance::set_idle_deadline(uint64_t deadline_ns) {
  assert(state_ == InstanceState::warm);
  timer_purpose_ = TimerPurpose::idle;
  pool_.timers().start(timer_, deadline_ns);
}

void Instance::abandon(Invocation &inv) {
  assert(current_ == &inv);
  (void)inv;
  current_ = nullptr;
  current_abandoned_ = true;
}

void Instance::stop(const char *why) {
  if (state_ == InstanceState::stopping) return;
  assert(state_ != InstanceState::busy && "busy instances are killed, not stopped");
  FV_DEBUG("instance %s: stopping (%s)", name_.c_str(), why);
  begin_stopping();
  // End of input asks a well-behaved instance to exit; SIGTERM asks the rest; SIGKILL after
  // the grace period. The write end is idle here (no invocation), so closing it is safe.
  if (launched_.to_instance >= 0 && !write_op_.in_flight) {
    close(launched_.to_instance);
    launched_.to_instance = -1;
  }
  launched_.child.signal(SIGTERM);
  timer_purpose_ = TimerPurpose::stop_grace;
  pool_.timers().start(timer_, monotonic_ns() + pool_.options().stop_grace_ms * 1'000'000ull);
  pool_.instance_stopping(*this, false, why);
  after_pending_exit();
}

void Instance::kill(int status, std::string reason) {
  if (state_ == InstanceState::stopping) return;
  bool was_booting = state_ == InstanceState::booting;
  FV_INFO("instance %s: killed: %s", name_.c_str(), reason.c_str());
  if (current_ != nullptr || current_abandoned_) {
    InvocationResult result;
    result.status = status;
    result.error = reason;
    result.instance_id = id_;
    result.cold = current_cold_;
    finish_invocation(result);
  }
  begin_stopping();
  kill_sent_ = true;
  launched_.child.signal(function_->backend().kill_signal());
  // Should the kill signal not end it (a supervisor that is itself stuck), SIGKILL follows.
  timer_purpose_ = TimerPurpose::stop_grace;
  pool_.timers().start(timer_, monotonic_ns() + last_resort_delay_ns());
  pool_.instance_stopping(*this, was_booting, reason);
  after_pending_exit();
}

// The process is gone but its output was still being read (finish_exit): now it stops, the
// exit's own work is due.
void Instance::after_pending_exit() {
  if (!exit_pending_) return;
  exit_pending_ = false;
  after_exit();
}

void Instance::fault(std::string reason) { kill(502, std::move(reason)); }

// The start of a fault message: whether the OOM killer acted in the instance's cgroup (the
// sandbox leaves its memory cgroup for this when it did), else `otherwise`.
std::string Instance::out_of_memory_or(const char *otherwise) {
  if (!function_->backend().out_of_memory(launched_)) return otherwise;
  return "the instance ran out of memory (limit " +
         std::to_string(function_->spec().memory_bytes >> 20) + " MiB) and ";
}

void Instance::begin_stopping() {
  pool_.timers().stop(timer_);
  pool_.timers().stop(eof_timer_);
  timer_purpose_ = TimerPurpose::none;
  if (warm_hook.linked()) function_->warm_list.remove(*this);
  set_state(InstanceState::stopping);
}

void Instance::finish_invocation(const InvocationResult &result) {
  Invocation *inv = current_;
  current_ = nullptr;
  current_abandoned_ = false;
  if (inv != nullptr) {
    InvocationResult copy = result;
    pool_.deliver(*inv, copy);
  }
}

// --- reading frames -------------------------------------------------------------------

void Instance::arm_read() {
  if (in_len_ == in_.size()) {
    size_t limit = FV_FRAME_HEADER_SIZE + pool_.options().max_frame_bytes;
    in_.resize(std::min(in_.size() * 2, limit));
  }
  pool_.ring().read(read_op_, launched_.from_instance, in_.data() + in_len_, in_.size() - in_len_);
}

void Instance::on_read(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Instance>();
  ++self.depth_;
  if (self.state_ != InstanceState::stopping) {
    if (result == -EAGAIN || result == -EINTR) {
      self.arm_read();  // as in on_log: an empty O_NONBLOCK pipe, not a failure
    } else if (result < 0) {
      self.fault(std::string("reading from the instance failed: ") + std::strerror(-result));
    } else if (result == 0) {
      // Usually the process is exiting: give the exit watcher a moment so the failure
      // names the exit status or signal rather than just the closed stream.
      if (self.exit_pending_) self.finish_exit(false);
      else self.pool_.timers().start(self.eof_timer_, monotonic_ns() + kEofGraceNs);
    } else {
      self.in_len_ += static_cast<size_t>(result);
      self.handle_frames();
      if (self.state_ != InstanceState::stopping) self.arm_read();
    }
  }
  --self.depth_;
  self.maybe_release();
}

void Instance::handle_frames() {
  for (;;) {
    if (console_preamble_ && !seen_frame_) {
      // Skip console text until the first frame's magic; keep it as the instance's log.
      size_t i = 0;
      while (i + 4 <= in_len_ && !(in_[i] == 'F' && in_[i + 1] == 'V' && in_[i + 2] == 'P' && in_[i + 3] == '1'))
        ++i;
      if (i + 4 > in_len_) i = in_len_ >= 3 ? in_len_ - 3 : 0;
      if (i > 0) {
        log_tail_.append(reinterpret_cast<char *>(in_.data()), i);
        if (log_tail_.size() > kLogTailBytes) log_tail_.erase(0, log_tail_.size() - kLogTailBytes);
        std::memmove(in_.data(), in_.data() + i, in_len_ - i);
        in_len_ -= i;
      }
      if (in_len_ < 4) return;
    }
    fv_frame_header header{};
    int rc = fv_frame_header_parse(in_.data(), in_len_, pool_.options().max_frame_bytes, &header);
    if (rc == FV_NEED_MORE) return;
    if (rc != FV_OK) {
      fault(std::string("instance protocol error: ") + fv_frame_strerror(rc));
      return;
    }
    seen_frame_ = true;
    size_t total = FV_FRAME_HEADER_SIZE + header.length;
    if (in_len_ < total) {
      if (in_.size() < total) in_.resize(total);  // bounded by max_frame_bytes above
      return;
    }
    if (!handle_frame(header.type, in_.data() + FV_FRAME_HEADER_SIZE, header.length)) return;
    std::memmove(in_.data(), in_.data() + total, in_len_ - total);
    in_len_ -= total;
    if (in_len_ == 0 && in_.size() > kKeepBufferBytes) {
      in_.resize(kInitialReadBytes);
      in_.shrink_to_fit();
    }
  }
}

bool Instance::handle_frame(uint8_t type, const uint8_t *payload, uint32_t length) {
  switch (type) {
    case FV_FRAME_LOG:
      function_->logs.append(name_, {reinterpret_cast<const char *>(payload), length}, false, realtime_ns());
      return true;
    case FV_FRAME_READY: {
      if (state_ != InstanceState::booting) {
        fault("instance protocol error: READY frame after the instance was ready");
        return false;
      }
      // Only the function can send READY, after the sandbox read all its initial input: the
      // write's completion is always reaped first. Guard the invariant rather than interleave.
      if (write_op_.in_flight) {
        fault("instance protocol error: READY before the instance had read its initial input");
        return false;
      }
      uint64_t now = monotonic_ns();
      pool_.timers().stop(timer_);
      timer_purpose_ = TimerPurpose::none;
      set_state(InstanceState::warm);
      last_used_ns_ = now;
      ready_ns_ = now;
      pool_.instance_ready(*this, now - spawn_ns_);
      return state_ != InstanceState::stopping;
    }
    case FV_FRAME_RESPONSE: {
      if (state_ != InstanceState::busy) {
        fault("instance protocol error: RESPONSE frame with no request outstanding");
        return false;
      }
      int rc = fv_response_decode(payload, length, &g_response_view);
      if (rc != FV_OK) {
        fault(std::string("instance protocol error in RESPONSE: ") + fv_frame_strerror(rc));
        return false;
      }
      pool_.timers().stop(timer_);
      timer_purpose_ = TimerPurpose::none;
      InvocationResult result;
      result.status = g_response_view.status;
      result.cold = current_cold_;
      result.instance_id = id_;
      result.body = {g_response_view.body.ptr, g_response_view.body.len};
      for (uint32_t i = 0; i < g_response_view.header_count; ++i) {
        const fv_header &h = g_response_view.headers[i];
        result.headers.emplace_back(std::string_view{h.name.ptr, h.name.len},
                                    std::string_view{h.value.ptr, h.value.len});
      }
      ++served_;
      last_used_ns_ = monotonic_ns();
      set_state(InstanceState::warm);
      finish_invocation(result);
      if (state_ == InstanceState::warm) pool_.instance_idle(*this);
      return state_ != InstanceState::stopping;
    }
    case FV_FRAME_GET_SECRETS:
      return answer_get_secrets();
    default:
      fault("instance protocol error: unexpected frame type " + std::to_string(type));
      return false;
  }
}

// GET_SECRETS: the instance wants its function's secrets (docs/protocol.md). It may ask once,
// while booting (from fv_init) or during an invocation (from handle()): then nothing else is
// being sent to it, but for the tail of the REQUEST it has already read.
bool Instance::answer_get_secrets() {
  if (secrets_asked_ || (state_ != InstanceState::booting && state_ != InstanceState::busy)) {
    fault(secrets_asked_ ? "instance protocol error: a second GET_SECRETS frame"
                         : "instance protocol error: GET_SECRETS frame with no request outstanding");
    return false;
  }
  secrets_asked_ = true;
  const std::vector<std::string> &names = function_->spec().secrets;
  Result<std::vector<secrets::SecretValue>> values = std::vector<secrets::SecretValue>{};
  if (!names.empty()) {
    if (pool_.secrets() == nullptr) values = plain_error("no secrets on this node", names[0]);
    else values = pool_.secrets()->resolve(names);
  }
  if (!values) {
    fault("cannot give the instance its secrets: " + values.error().message());
    return false;
  }
  static fv_secrets_view view;  // large (64 entries); used only here, between calls
  view.count = static_cast<uint32_t>(values->size());
  for (uint32_t i = 0; i < view.count; ++i) {
    const secrets::SecretValue &v = (*values)[i];
    view.entries[i].name = {v.name.data(), static_cast<uint32_t>(v.name.size())};
    view.entries[i].value = {v.value.data(), static_cast<uint32_t>(v.value.size())};
  }
  std::vector<uint8_t> frame(FV_FRAME_HEADER_SIZE + fv_secrets_payload_size(&view));
  long n = fv_secrets_encode(frame.data(), frame.size(), &view);
  view = {};
  if (n < 0) {
    fault(std::string("cannot give the instance its secrets: ") + fv_frame_strerror(static_cast<int>(n)));
    return false;
  }
  send_frame(std::move(frame));
  return true;
}

// --- writing frames -------------------------------------------------------------------

// Sends a frame the node writes unasked by an invocation (SECRETS): now if the writer is
// idle, else right after the frame under way.
void Instance::send_frame(std::vector<uint8_t> frame) {
  if (write_op_.in_flight || out_sent_ < out_.size()) {
    out_next_ = std::move(frame);
    return;
  }
  out_ = std::move(frame);
  out_sent_ = 0;
  out_has_secrets_ = true;
  write_more();
}

void Instance::write_more() {
  pool_.ring().write(write_op_, launched_.to_instance, out_.data() + out_sent_, out_.size() - out_sent_);
}

void Instance::on_write(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Instance>();
  ++self.depth_;
  if (self.state_ != InstanceState::stopping) {
    if (result <= 0) {
      self.fault(std::string("writing to the instance failed: ") +
                 std::strerror(result < 0 ? -result : EPIPE) + self.log_tail());
    } else {
      self.out_sent_ += static_cast<size_t>(result);
      if (self.out_sent_ < self.out_.size()) {
        self.write_more();
      } else {
        if (self.out_has_secrets_) std::fill(self.out_.begin(), self.out_.end(), uint8_t{0});
        self.out_has_secrets_ = false;
        if (self.out_.capacity() > kKeepBufferBytes) std::vector<uint8_t>().swap(self.out_);
        if (!self.out_next_.empty()) {
          std::vector<uint8_t> next = std::move(self.out_next_);
          self.out_next_.clear();
          self.send_frame(std::move(next));
        }
      }
    }
  }
  --self.depth_;
  self.maybe_release();
}

// --- the log stream -------------------------------------------------------------------

// How much of the time an invocation spent before it reached this instance (a timeout on a
// loaded node is often mostly a slow start): empty when it was assigned at once.
std::string Instance::waited_note() const {
  uint64_t waited_ms = current_waited_ns_ / 1'000'000;
  if (waited_ms == 0) return {};
  return " (" + std::to_string(waited_ms) + " ms of it waiting for " +
         (current_cold_ ? "this instance to start)" : "an instance)");
}

void Instance::arm_log() {
  if (launched_.log >= 0) pool_.ring().read(log_op_, launched_.log, log_buf_.data(), log_buf_.size());
}

void Instance::on_log(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Instance>();
  if (result == -EAGAIN || result == -EINTR) {
    // The node's end is O_NONBLOCK: a read that io_uring hands to a worker after a poll
    // wake-up finds the pipe empty completes with EAGAIN. Not the end of the stream; were
    // it taken as one, the instance would block on its next 64 KiB of stderr.
    self.arm_log();
    return;
  }
  if (result > 0) {
    if (static_cast<size_t>(result) == self.log_buf_.size() && self.log_buf_.size() < kLogReadMaxBytes)
      self.log_buf_.resize(kLogReadMaxBytes);
    for (int i = 0; i < result; ++i) {
      char ch = self.log_buf_[i];
      if (ch != '\n' && self.log_line_.size() < kLogLineMax) {
        self.log_line_ += ch;
        continue;
      }
      if (ch != '\n') {  // the rest of an over-long line is cut
        self.log_line_cut_ = true;
        continue;
      }
      self.function_->logs.append(self.name_, self.log_line_, self.log_line_cut_, realtime_ns());
      self.log_line_cut_ = false;
      self.log_tail_ += self.log_line_;
      self.log_tail_ += '\n';
      if (self.log_tail_.size() > kLogTailBytes)
        self.log_tail_.erase(0, self.log_tail_.size() - kLogTailBytes);
      self.log_line_.clear();
    }
    self.arm_log();  // keep draining even while stopping, until end of stream
  } else {
    if (!self.log_line_.empty())
      self.function_->logs.append(self.name_, self.log_line_, self.log_line_cut_, realtime_ns());
    if (self.exit_pending_) {
      ++self.depth_;
      self.finish_exit(false);
      --self.depth_;
    }
  }
  self.maybe_release();
}

std::string Instance::log_tail() const {
  std::string tail = log_tail_ + log_line_;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (tail.empty()) return {};
  if (tail.size() > 512) tail = "..." + tail.substr(tail.size() - 512);
  return "; its last output: " + tail;
}

// --- exit, stop, cleanup --------------------------------------------------------------

void Instance::on_exit(io::Completion &c, int, uint32_t) {
  auto &self = c.owner_as<Instance>();
  ++self.depth_;
  proc::ExitStatus status;
  auto reaped = self.launched_.child.try_reap(&status);
  if (reaped && !*reaped) {
    // Spurious wake-up: keep watching.
    self.pool_.ring().poll(self.exit_op_, self.launched_.child.pidfd(), POLLIN);
  } else {
    self.reaped_ = true;
    std::string how = reaped ? status.describe() : reaped.error().message();
    FV_DEBUG("instance %s: process %s", self.name_.c_str(), how.c_str());
    if (self.state_ != InstanceState::stopping && (self.read_op_.in_flight || self.log_op_.in_flight)) {
      // The exit can be seen before the last of the output is read: a guest's console
      // (kernel panic) or a function's last stderr lines may still sit in the pipes, and they
      // are what names the failure. Read on until both streams end, for at most the grace.
      self.exit_pending_ = true;
      self.exit_how_ = std::move(how);
      self.pool_.timers().start(self.eof_timer_, monotonic_ns() + kEofGraceNs);
    } else {
      if (self.state_ != InstanceState::stopping)
        self.fault(self.out_of_memory_or("the instance ") + how + self.log_tail());
      self.after_exit();
    }
  }
  --self.depth_;
  self.maybe_release();
}

// An exit whose output was still open (on_exit): both streams ended, or the grace passed
// (a process that outlived the instance holds a pipe). kill() then does the exit's work.
void Instance::finish_exit(bool grace_over) {
  if (!exit_pending_ || (!grace_over && (read_op_.in_flight || log_op_.in_flight))) return;
  pool_.timers().stop(eof_timer_);
  fault(out_of_memory_or("the instance ") + exit_how_ + log_tail());
}

void Instance::after_exit() {
  pool_.timers().stop(timer_);
  timer_purpose_ = TimerPurpose::none;
  // Everything that could still be pending completes with EOF/EPIPE now the process is
  // gone; cancel anyway so a stray holder of the pipe cannot keep us waiting.
  pool_.ring().cancel(read_op_);
  pool_.ring().cancel(write_op_);
  pool_.ring().cancel(log_op_);
  meter_.cancel(pool_.ring());
  try_cleanup();
}

void Instance::try_cleanup() {
  Status st = function_->backend().cleanup(launched_);
  if (st.ok() || ++cleanup_attempts_ >= kCleanupAttempts) {
    if (!st.ok()) FV_WARN("instance %s: cleanup failed: %s", name_.c_str(), st.error().message().c_str());
    cleaned_ = true;
    return;
  }
  timer_purpose_ = TimerPurpose::cleanup_retry;
  pool_.timers().start(timer_, monotonic_ns() + kCleanupRetryNs);
}

void Instance::on_timer(io::Timer &t) {
  auto &self = t.owner_as<Instance>();
  ++self.depth_;
  TimerPurpose purpose = self.timer_purpose_;
  self.timer_purpose_ = TimerPurpose::none;
  switch (purpose) {
    case TimerPurpose::boot:
      self.fault("the instance did not become ready within " +
                 std::to_string(self.function_->spec().boot_timeout_ms) + " ms" + self.log_tail());
      break;
    case TimerPurpose::exec:
      self.kill(504, "the invocation timed out after " +
                         std::to_string(self.function_->spec().timeout_ms) + " ms" + self.waited_note());
      break;
    case TimerPurpose::idle:
      if (self.state_ == InstanceState::warm) self.pool_.instance_idle_expired(self);
      break;
    case TimerPurpose::stop_grace:
      if (!self.kill_sent_) {
        self.kill_sent_ = true;
        self.launched_.child.signal(self.function_->backend().kill_signal());
        self.timer_purpose_ = TimerPurpose::stop_grace;
        self.pool_.timers().start(self.timer_, monotonic_ns() + self.last_resort_delay_ns());
      } else if (self.function_->backend().force_kill(self.launched_)) {
        self.timer_purpose_ = TimerPurpose::stop_grace;
        self.pool_.timers().start(self.timer_, monotonic_ns() + self.last_resort_delay_ns());
      }
      break;
    case TimerPurpose::cleanup_retry:
      self.try_cleanup();
      break;
    case TimerPurpose::none:
      break;
  }
  --self.depth_;
  self.maybe_release();
}

void Instance::close_streams() {
  for (int *fd : {&launched_.to_instance, &launched_.from_instance, &launched_.log}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

void Instance::maybe_release() {
  if (depth_ > 0 || released_ || !finished()) return;
  released_ = true;
  close_streams();
  pool_.instance_finished(*this);  // deletes this: nothing may follow
}

}  // namespace faasvisor::pool
