// One function instance: a launched backend process speaking the instance protocol.
//
// States and their transitions (asserted):
//   booting --READY--> warm --assign--> busy --RESPONSE--> warm
//   any --fault/stop--> stopping --exit reaped, I/O drained, cleanup done--> (freed by Pool)
// The instance owns its child (by pidfd), its stream fds, its cgroup and four completions:
// reading frames, writing frames, reading the log stream, and watching the exit. It is freed
// only when none of them is in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/invocation.h"
#include "pool/memory_meter.h"
#include "util/intrusive_list.h"

namespace faasvisor::pool {

class Function;
class Pool;

enum class InstanceState { booting, warm, busy, stopping };
const char *to_string(InstanceState state);

class Instance {
 public:
  Instance(Pool &pool, std::shared_ptr<Function> function, uint64_t id);
  Instance(const Instance &) = delete;
  Instance &operator=(const Instance &) = delete;
  ~Instance();

  // Launches the backend process and starts watching it. On error the instance is already
  // stopping (nothing to clean up but itself).
  Status start(uint64_t now_ns);

  // Sends the invocation's request (warm -> busy). `cold`: the invocation waited for this
  // instance to boot.
  void assign(Invocation &inv, uint64_t now_ns, bool cold);
  // The invocation no longer wants the answer (client gone). The instance finishes the
  // request and returns to warm, dropping the response.
  void abandon(Invocation &inv);
  // Graceful stop: end of input, SIGTERM, SIGKILL after the grace period.
  void stop(const char *why);
  // Immediate stop: SIGKILL. The invocation in flight (if any) is answered with `status`.
  void kill(int status, std::string reason);
  // While warm: stop when the keep-alive runs out (the pool decides at that moment).
  void set_idle_deadline(uint64_t deadline_ns);
  bool prewarmed = false;  // started by the keep-alive policy's pre-warm

  InstanceState state() const { return state_; }
  uint64_t id() const { return id_; }
  const std::string &name() const { return name_; }
  Function &function() const { return *function_; }
  uint64_t generation() const { return generation_; }
  pid_t pid() const { return launched_.child.pid(); }
  // Egress traffic so far (faasvisor.network=egress); false without a network.
  bool network_traffic(uint64_t *sent, uint64_t *received) const { return launched_.network.traffic(sent, received); }
  uint64_t spawn_ns() const { return spawn_ns_; }
  // Launch to READY (the instance's initialisation time); 0 until it was ready.
  uint64_t init_ns() const { return ready_ns_ != 0 ? ready_ns_ - spawn_ns_ : 0; }
  uint64_t last_used_ns() const { return last_used_ns_; }
  uint32_t served() const { return served_; }
  uint64_t state_since_ns() const { return state_since_ns_; }
  // Measured footprint (the cgroup's usage), refreshed by the pool's sampler; 0 until then.
  uint64_t memory_bytes() const { return memory_bytes_; }
  // Starts a measurement: through the ring where the backend names its files (the figure
  // arrives a few loop turns later), else the backend's own (synchronous) reading.
  void sample_memory();
  // Memory held against the node's budget: the function's limit when the instance started.
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  bool finished() const;  // stopping, reaped, drained, cleaned: the pool may free it

  ListHook member_hook;  // Function::instances
  ListHook warm_hook;    // Function::warm_list
  ListHook pool_hook;    // Pool::all_

 private:
  static void on_read(io::Completion &c, int result, uint32_t flags);
  static void on_write(io::Completion &c, int result, uint32_t flags);
  static void on_log(io::Completion &c, int result, uint32_t flags);
  static void on_exit(io::Completion &c, int result, uint32_t flags);
  static void on_timer(io::Timer &t);
  static void on_measured(MemoryMeter &meter, bool measured, uint64_t bytes);

  void set_state(InstanceState next);
  uint64_t last_resort_delay_ns() const;
  void arm_read();
  void arm_log();
  void write_more();
  void send_frame(std::vector<uint8_t> frame);
  bool answer_get_secrets();
  void handle_frames();
  bool handle_frame(uint8_t type, const uint8_t *payload, uint32_t length);
  void fault(std::string reason);        // protocol or I/O fault: kill, 502 for the invocation
  std::string out_of_memory_or(const char *otherwise);
  void finish_invocation(const InvocationResult &result);
  void begin_stopping();
  void after_exit();
  void finish_exit(bool grace_over);
  void after_pending_exit();
  void try_cleanup();
  void close_streams();
  void maybe_release();
  std::string log_tail() const;
  std::string waited_note() const;

  Pool &pool_;
  std::shared_ptr<Function> function_;
  uint64_t id_;
  uint64_t generation_;
  std::string name_;
  InstanceState state_ = InstanceState::booting;
  backend::Launched launched_;
  bool console_preamble_ = false;
  bool seen_frame_ = false;

  io::Completion read_op_{}, write_op_{}, log_op_{}, exit_op_{};
  MemoryMeter meter_{this, &Instance::on_measured};
  io::Timer timer_;  // boot deadline, exec deadline, stop grace, cleanup retry: one at a time
  io::Timer eof_timer_;  // output closed: wait briefly for the exit status
  enum class TimerPurpose { none, boot, exec, idle, stop_grace, cleanup_retry } timer_purpose_ = TimerPurpose::none;

  std::vector<uint8_t> in_;   // frames from the instance; in_[0..in_len_) is unparsed
  size_t in_len_ = 0;
  std::vector<uint8_t> out_;  // the frame being written; out_[out_sent_..) is still to go
  size_t out_sent_ = 0;
  std::vector<uint8_t> out_next_;  // a frame waiting for the one being written (SECRETS)
  bool out_has_secrets_ = false;   // out_ holds secret values: wiped once written
  bool secrets_asked_ = false;     // GET_SECRETS is answered once per instance
  // Log reads: 1 KiB while the instance writes little; 16 KiB from the first read that fills
  // it, so a flood (64 KiB pipe) is drained in a few loop turns instead of 64 per pipe-full.
  std::vector<char> log_buf_ = std::vector<char>(1024);
  std::string log_line_;      // a partial log line
  bool log_line_cut_ = false;
  std::string log_tail_;      // the last few lines, for failure messages

  Invocation *current_ = nullptr;
  bool current_abandoned_ = false;
  bool current_cold_ = false;
  uint64_t current_waited_ns_ = 0;  // arrival to assignment: queued, or waiting for a start
  bool reaped_ = false;
  bool exit_pending_ = false;  // reaped while its output was still open (finish_exit)
  std::string exit_how_;       // how it exited, for the fault finish_exit names
  bool cleaned_ = false;
  bool released_ = false;
  bool kill_sent_ = false;  // the backend's kill signal was sent; SIGKILL is the last resort
  int depth_ = 0;  // callbacks of this instance on the stack: defer release until 0
  uint32_t cleanup_attempts_ = 0;
  uint32_t served_ = 0;
  uint64_t spawn_ns_ = 0, ready_ns_ = 0, last_used_ns_ = 0;
  uint64_t state_since_ns_ = 0;
  uint64_t memory_bytes_ = 0;
  uint64_t reserved_bytes_ = 0;
  std::string exit_description_;
};

}  // namespace faasvisor::pool
