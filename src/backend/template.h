// Templates (docs/templates.md): for a Python function on the process backend, one process
// per function definition that has started the runtime and imported the function's module,
// then waits. A cold start takes a pooled stem as usual, tells it to adopt (GO mode adopt)
// and asks the template, over its control socket, to fork an instance into it: the fork
// joins the stem's namespaces and cgroups and says READY on the stem's streams, so the
// instance is then like any other (pool::Instance sees a stem and its pipes).
//
// The template lives in a stem of its own (faasvisor-stem --template: its own mount, net,
// ipc and uts namespaces and cgroup, the host's pid namespace), held by pidfd and watched on
// the ring; its control socket and stderr are read on the ring. Nothing here blocks: the
// spawn is posix_spawn (as for any stem), the fork request one non-blocking sendmsg.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "io/ring.h"

namespace faasvisor::backend {

// Whether a pooled stem has made its namespaces (a template's child can join it only then).
bool stem_has_namespaces(const Launched &stem);

class Template {
 public:
  enum class State { starting, ready, dead };

  Template(io::Ring &ring, const proc::CgroupTree &cgroups, uint64_t id);
  ~Template();
  Template(const Template &) = delete;
  Template &operator=(const Template &) = delete;

  // Spawns the template's sandbox and tells it to become the template of `spec`, with the
  // GO message that `go_message` makes for the template's name.
  using GoMessage = std::function<Result<std::string>(std::string_view name)>;
  Status start(const FunctionSpec &spec, const std::string &stem_path, const GoMessage &go_message);
  // Asks the template to fork an instance into `stem` (already sent GO mode adopt).
  // The child then waits in the stem for the start message (encode_template_start).
  Status fork_into(const Launched &stem);
  // Ends the template (its forked instances live on: they are in their stems).
  void stop();
  // No completion in flight and nothing left to remove: the owner may free it.
  bool finished() const;

  State state() const { return state_; }
  pid_t pid() const { return stem_.child.pid(); }
  uint64_t forks() const { return forks_; }
  uint64_t started_ns() const { return started_ns_; }
  // Its sandbox's memory (the template's own pages: what its instances share with it).
  uint64_t memory_bytes();
  const std::string &last_error() const { return last_error_; }

 private:
  static void on_control(io::Completion &c, int result, uint32_t flags);
  static void on_exit(io::Completion &c, int result, uint32_t flags);
  static void on_log(io::Completion &c, int result, uint32_t flags);
  void mark_dead(const std::string &why);

  io::Ring &ring_;
  const proc::CgroupTree &cgroups_;
  std::string name_;
  Launched stem_;
  int control_fd_ = -1;  // node's end of the SOCK_SEQPACKET pair; the template has fd 3
  State state_ = State::starting;
  uint64_t id_;
  uint64_t forks_ = 0;
  uint64_t started_ns_ = 0;
  uint64_t memory_bytes_ = 0;
  uint64_t memory_sampled_ns_ = 0;
  bool cleaned_ = false;
  std::string last_error_;
  io::Completion control_op_;
  io::Completion exit_op_;
  io::Completion log_op_;
  char control_buf_[512];
  char log_buf_[1024];
  std::string log_line_;
};

}  // namespace faasvisor::backend
