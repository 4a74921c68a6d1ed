#include "sim/world.h"

#include <signal.h>

#include <cassert>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "faasvisor/frame.h"

namespace faasvisor::sim {

// --- Trace ------------------------------------------------------------------------------

void Trace::add(uint64_t now_ns, const char *fmt, ...) {
  if (!enabled) return;
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, "%10.3f ms  ", static_cast<double>(now_ns) / 1e6);
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n), fmt, ap);
  va_end(ap);
  if (echo) std::fprintf(stderr, "%s\n", buf);
  if (lines_.size() < keep_) {
    lines_.emplace_back(buf);
    return;
  }
  lines_[next_].assign(buf);
  next_ = (next_ + 1) % keep_;
}

std::string Trace::dump() const {
  std::string out;
  for (size_t i = 0; i < lines_.size(); ++i) {
    out += lines_[(next_ + i) % lines_.size()];
    out += '\n';
  }
  return out;
}

// --- World ------------------------------------------------------------------------------

World::World(uint64_t seed) : rng(seed) {}

void World::at(uint64_t t_ns, std::function<void()> fn) {
  events_.push(Event{std::max(t_ns, now_ns()), rng(), std::move(fn)});
}

uint64_t World::next_ns() const {
  uint64_t e = events_.empty() ? UINT64_MAX : events_.top().t_ns;
  return std::min(e, timers.next_deadline_ns());
}

bool World::step() {
  uint64_t t = next_ns();
  if (t == UINT64_MAX) return false;
  clock.advance_to(t);
  ++events_run_;
  if (!events_.empty() && events_.top().t_ns == t) {
    // priority_queue::top is const: move the callable out through a copy of the handle.
    std::function<void()> fn = std::move(const_cast<Event &>(events_.top()).fn);
    events_.pop();
    fn();
  } else {
    timers.run_expired(t);
  }
  return true;
}

// --- Faults -----------------------------------------------------------------------------

Faults Faults::many() {
  Faults f;
  f.launch_fails = 0.03;
  f.boot_slow = 0.08;
  f.boot_crash = 0.04;
  f.boot_hang = 0.02;
  f.boot_garbage = 0.02;
  f.initial_input = 0.2;
  f.log_stream = 0.5;
  f.request_slow = 0.04;
  f.request_crash = 0.02;
  f.request_hang = 0.01;
  f.request_garbage = 0.02;
  f.request_eof = 0.01;
  f.request_extra = 0.01;
  f.ignores_sigterm = 0.1;
  f.cleanup_busy = 0.1;
  f.cleanup_stuck = 0.01;
  return f;
}

// --- Model ------------------------------------------------------------------------------

struct Model {
  struct Op {
    io::Completion *c = nullptr;
    uint8_t *buf = nullptr;
    const uint8_t *wbuf = nullptr;
    size_t len = 0;
    bool scheduled = false;
    bool cancelled = false;
  };
  enum class Slot { read, write, log, exit };

  SimBackend &backend;
  uint64_t key;
  std::string name;
  uint64_t reservation;
  uint64_t timeout_ns, boot_timeout_ns;
  int fd_out, fd_in, fd_log;
  bool out_open = true, in_open = true, log_open;

  bool alive = true;
  bool dying = false;  // an exit is scheduled
  proc::ExitStatus status;
  bool reaped = false;
  bool output_closed = false;  // EOF once `output` is read
  std::string output, log_output, input;
  size_t initial_left = 0;  // bytes of the launch's initial input still to be read
  bool boot_due = false;    // READY waits for the initial input
  bool ready = false;
  bool answered_twice = false;
  bool ignores_sigterm = false;
  int cleanup_busy_left = 0;
  bool cleanup_stuck = false;
  uint32_t cleanup_calls = 0;
  bool cleaned = false;
  bool given_up = false;
  Op read, write, log, exit;

  Model(SimBackend &b, uint64_t k) : backend(b), key(k) {}
  World &world() { return backend.world(); }
  uint64_t latency() { return world().uniform(0, backend.options().io_latency_max_ns); }
  const Faults &faults() { return backend.options().faults; }

  Op &op(Slot s) {
    switch (s) {
      case Slot::read: return read;
      case Slot::write: return write;
      case Slot::log: return log;
      case Slot::exit: break;
    }
    return exit;
  }

  // Schedules the completion of an armed operation. It computes its result when it runs,
  // from the model as it is then (as the kernel would).
  void schedule(Slot s, uint64_t delay_ns) {
    Op &o = op(s);
    if (o.c == nullptr || o.scheduled) return;
    o.scheduled = true;
    SimBackend *b = &backend;
    uint64_t k = key;
    world().after(delay_ns, [b, k, s] {
      Model *m = b->by_key(k);
      if (m != nullptr) m->complete(s);
    });
  }

  void complete(Slot s) {
    Op &o = op(s);
    if (o.c == nullptr) return;
    o.scheduled = false;
    int result = 0;
    if (o.cancelled) {
      result = -ECANCELED;
    } else {
      switch (s) {
        case Slot::read:
          if (!output.empty()) {
            size_t n = std::min(o.len, output.size());
            // Short reads, except after a double answer: the node can tell a second RESPONSE
            // only while it arrives with the first (Instance::bytes_before_request_); one that
            // arrives after the next REQUEST went out is that request's answer to it, as the
            // protocol has no request ids (docs/simulation.md).
            if (n > 1 && !answered_twice && backend.options().short_io && world().chance(0.2))
              n = world().uniform(1, n);
            std::memcpy(o.buf, output.data(), n);
            output.erase(0, n);
            result = static_cast<int>(n);
          } else if (!output_closed) {
            return;  // parked until the instance writes
          }
          break;
        case Slot::log:
          if (!log_output.empty()) {
            size_t n = std::min(o.len, log_output.size());
            std::memcpy(o.buf, log_output.data(), n);
            log_output.erase(0, n);
            result = static_cast<int>(n);
          } else if (alive) {
            return;
          }
          break;
        case Slot::write:
          if (!alive) {
            result = -EPIPE;
          } else {
            size_t n = o.len;
            if (n > 1 && backend.options().short_io && world().chance(0.1)) n = world().uniform(1, n);
            input.append(reinterpret_cast<const char *>(o.wbuf), n);
            result = static_cast<int>(n);
          }
          break;
        case Slot::exit: result = 1; break;  // POLLIN; while it runs, a spurious wake-up
      }
    }
    io::Completion *c = o.c;
    o = Op{};
    c->in_flight = false;
    // The callback may free the instance and, through its cleanup, this model: read input
    // first and touch nothing after.
    if (s == Slot::write && result > 0) consume_input();
    c->callback(*c, result, 0);
  }

  void arm(Slot s, io::Completion &c, uint8_t *buf, const uint8_t *wbuf, size_t len) {
    Op &o = op(s);
    if (c.in_flight) backend.record_violation(name + ": a completion armed while in flight");
    if (o.c != nullptr) backend.record_violation(name + ": two operations at once on one stream");
    c.in_flight = true;
    o = Op{&c, buf, wbuf, len, false, false};
    uint64_t delay = latency();
    switch (s) {
      case Slot::read:
        if (!output.empty() || output_closed) schedule(s, delay);
        break;
      case Slot::log:
        if (!log_output.empty() || !alive) schedule(s, delay);
        break;
      case Slot::write: schedule(s, delay); break;
      case Slot::exit:
        // A wake-up while it still runs, now and then: the pool must look again.
        if (!alive || world().chance(0.02)) schedule(s, delay);
        break;
    }
  }

  void cancel(io::Completion &c) {
    for (Slot s : {Slot::read, Slot::write, Slot::log, Slot::exit}) {
      Op &o = op(s);
      if (o.c != &c) continue;
      o.cancelled = true;
      schedule(s, world().uniform(0, 20'000));
    }
  }

  void emit(const std::string &bytes) {
    if (!alive || output_closed) return;
    output += bytes;
    schedule(Slot::read, latency());
  }

  void emit_frame(uint8_t type, const std::string &payload) {
    std::string frame(FV_FRAME_HEADER_SIZE, '\0');
    fv_frame_header_write(reinterpret_cast<uint8_t *>(frame.data()), type, static_cast<uint32_t>(payload.size()));
    emit(frame + payload);
  }

  void emit_log(const std::string &line) {
    if (fd_log < 0 || !alive) return;
    log_output += line;
    log_output += '\n';
    schedule(Slot::log, latency());
  }

  void die(bool by_signal, int code_or_signal, uint64_t delay_ns) {
    if (!alive || dying) return;
    dying = true;
    SimBackend *b = &backend;
    uint64_t k = key;
    world().after(delay_ns, [b, k, by_signal, code_or_signal] {
      Model *m = b->by_key(k);
      if (m == nullptr) return;
      m->alive = false;
      m->output_closed = true;
      m->status.exited = !by_signal;
      m->status.code_or_signal = code_or_signal;
      m->world().trace.add(m->world().now_ns(), "model %s: exits (%s %d)", m->name.c_str(),
                           by_signal ? "signal" : "code", code_or_signal);
      uint64_t l = m->latency();
      m->schedule(Slot::read, l);
      m->schedule(Slot::log, l);
      m->schedule(Slot::exit, l);
    });
  }

  void boot() {
    if (!alive) return;
    if (initial_left > 0) {
      boot_due = true;  // READY follows reading the whole initial input
      return;
    }
    const Faults &f = faults();
    double r = std::uniform_real_distribution<double>(0, 1)(world().rng);
    emit_log("booting " + name);
    if ((r -= f.boot_crash) < 0) {
      emit_log("boom: crashed while booting");
      die(false, 1, world().uniform(0, 1'000'000));
    } else if ((r -= f.boot_hang) < 0) {
      world().trace.add(world().now_ns(), "model %s: hangs at boot", name.c_str());
    } else if ((r -= f.boot_garbage) < 0) {
      emit("this is not a frame\n");
    } else {
      ready = true;
      emit_frame(FV_FRAME_READY, {});
    }
  }

  void consume_input() {
    if (initial_left > 0) {
      size_t n = std::min(initial_left, input.size());
      input.erase(0, n);
      initial_left -= n;
      if (initial_left == 0 && boot_due) {
        boot_due = false;
        SimBackend *b = &backend;
        uint64_t k = key;
        world().after(world().uniform(0, 1'000'000), [b, k] {
          if (Model *m = b->by_key(k)) m->boot();
        });
      }
    }
    for (;;) {
      fv_frame_header h{};
      int rc = fv_frame_header_parse(reinterpret_cast<const uint8_t *>(input.data()), input.size(), 64u << 20, &h);
      if (rc == FV_NEED_MORE) return;
      if (rc != FV_OK) {
        backend.record_violation(name + ": the node wrote a bad frame: " + fv_frame_strerror(rc));
        input.clear();
        return;
      }
      size_t total = FV_FRAME_HEADER_SIZE + h.length;
      if (input.size() < total) return;
      std::string payload = input.substr(FV_FRAME_HEADER_SIZE, h.length);
      input.erase(0, total);
      if (h.type == FV_FRAME_REQUEST) on_request(payload);
    }
  }

  void on_request(const std::string &payload) {
    static fv_request_view view;
    int rc = fv_request_decode(reinterpret_cast<const uint8_t *>(payload.data()),
                               static_cast<uint32_t>(payload.size()), &view);
    if (rc != FV_OK) {
      backend.record_violation(name + ": the node wrote a bad REQUEST: " + fv_frame_strerror(rc));
      return;
    }
    if (!ready) backend.record_violation(name + ": REQUEST before READY");
    std::string body(view.body.ptr, view.body.len);
    const SimBackendOptions &opt = backend.options();
    uint64_t exec = world().uniform(opt.exec_min_ns, opt.exec_max_ns);
    if (opt.exec_from_body) exec = std::strtoull(body.c_str(), nullptr, 10) * 1'000'000ull;
    const Faults &f = faults();
    double r = std::uniform_real_distribution<double>(0, 1)(world().rng);
    enum class Act { answer, twice, garbage, crash, hang, eof } act = Act::answer;
    if ((r -= f.request_slow) < 0) exec = world().uniform(timeout_ns / 2, 2 * timeout_ns);
    else if ((r -= f.request_crash) < 0) act = Act::crash;
    else if ((r -= f.request_hang) < 0) act = Act::hang;
    else if ((r -= f.request_garbage) < 0) act = Act::garbage;
    else if ((r -= f.request_eof) < 0) act = Act::eof;
    else if ((r -= f.request_extra) < 0 && body.size() < 1024) act = Act::twice;  // both fit one read
    SimBackend *b = &backend;
    uint64_t k = key;
    world().after(exec, [b, k, act, body] {
      Model *m = b->by_key(k);
      if (m == nullptr || !m->alive) return;
      switch (act) {
        case Act::crash:
          m->emit_log("segfault in handler");
          m->die(true, SIGSEGV, 0);
          return;
        case Act::hang: return;
        case Act::garbage: m->emit("\x01\x02garbage"); return;
        case Act::eof: m->output_closed = true; m->schedule(Slot::read, 0); return;
        case Act::answer:
        case Act::twice: break;
      }
      m->respond(body);
      if (act == Act::twice) {
        m->answered_twice = true;
        m->respond(body + "!");  // a second answer, in the same write as the first
      }
    });
  }

  void respond(const std::string &body) {
    static fv_response_view view;
    view = {};
    view.status = 200;
    view.header_count = 1;
    view.headers[0].name = {"Content-Type", 12};
    view.headers[0].value = {"text/plain", 10};
    view.body = {body.data(), static_cast<uint32_t>(body.size())};
    std::string frame(FV_FRAME_HEADER_SIZE + fv_response_payload_size(&view), '\0');
    long n = fv_response_encode(reinterpret_cast<uint8_t *>(frame.data()), frame.size(), &view);
    assert(n == static_cast<long>(frame.size()));
    (void)n;
    emit(frame);
  }

  void signal(int signo) {
    if (!alive) return;
    world().trace.add(world().now_ns(), "model %s: signal %d", name.c_str(), signo);
    if (signo == SIGTERM) {
      if (!ignores_sigterm) die(true, SIGTERM, world().uniform(100'000, 20'000'000));
    } else if (signo == SIGKILL) {
      die(true, SIGKILL, world().uniform(0, 2'000'000));
    }
  }

  void input_closed() {
    // End of input asks a well-behaved instance to exit.
    if (alive && !ignores_sigterm) die(false, 0, world().uniform(100'000, 5'000'000));
  }
};

// --- SimIo ------------------------------------------------------------------------------

void SimIo::read(io::Completion &c, int fd, void *buf, size_t len) {
  Model *m = backend_->by_fd(fd);
  if (m == nullptr) {
    violations.push_back("read on an unknown or closed stream " + std::to_string(fd));
    return;
  }
  Model::Slot s = fd == m->fd_log ? Model::Slot::log : Model::Slot::read;
  if (fd == m->fd_in) violations.push_back(m->name + ": read on the input stream");
  m->arm(s, c, static_cast<uint8_t *>(buf), nullptr, len);
}

void SimIo::write(io::Completion &c, int fd, const void *buf, size_t len) {
  Model *m = backend_->by_fd(fd);
  if (m == nullptr || fd != m->fd_in) {
    violations.push_back("write on an unknown, closed or wrong stream " + std::to_string(fd));
    return;
  }
  m->arm(Model::Slot::write, c, nullptr, static_cast<const uint8_t *>(buf), len);
}

void SimIo::watch_exit(io::Completion &c, const backend::Launched &launched) {
  Model *m = backend_->by_key(launched.backend_key);
  if (m == nullptr) {
    violations.push_back("exit watch on an unknown instance");
    return;
  }
  m->arm(Model::Slot::exit, c, nullptr, nullptr, 0);
}

void SimIo::cancel(io::Completion &c) {
  if (!c.in_flight) return;
  // The completion belongs to one model: find it through its armed slots.
  backend_->for_each_model([&c](Model &m) { m.cancel(c); });
}

Status SimIo::signal(backend::Launched &launched, int signo) {
  Model *m = backend_->by_key(launched.backend_key);
  if (m == nullptr) return errno_error("signal", ESRCH);
  if (m->reaped) return errno_error("signal", ESRCH);
  m->signal(signo);
  return {};
}

Result<bool> SimIo::try_reap(backend::Launched &launched, proc::ExitStatus *status) {
  Model *m = backend_->by_key(launched.backend_key);
  if (m == nullptr) return errno_error("waitid", ECHILD);
  if (m->alive) return false;
  if (m->reaped) {
    violations.push_back(m->name + ": reaped twice");
    return errno_error("waitid", ECHILD);
  }
  m->reaped = true;
  *status = m->status;
  return true;
}

void SimIo::close_stream(int fd) {
  Model *m = backend_->by_fd(fd);
  if (m == nullptr) {
    violations.push_back("close of an unknown or closed stream " + std::to_string(fd));
    return;
  }
  backend_->close_fd(*m, fd);
}

// --- SimBackend -------------------------------------------------------------------------

SimBackend::SimBackend(World &world, SimIo &io, SimBackendOptions options)
    : world_(world), io_(io), options_(options) {
  io_.set_backend(this);
}

SimBackend::~SimBackend() { io_.set_backend(nullptr); }

Model *SimBackend::by_fd(int fd) {
  auto it = by_fd_.find(fd);
  return it == by_fd_.end() ? nullptr : it->second;
}

Model *SimBackend::by_key(uint64_t key) {
  auto it = models_.find(key);
  return it == models_.end() ? nullptr : it->second.get();
}

void SimBackend::for_each_model(const std::function<void(Model &)> &fn) {
  for (auto &[key, m] : models_) fn(*m);
}

Result<backend::Launched> SimBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  const Faults &f = options_.faults;
  if (world_.chance(f.launch_fails)) {
    world_.trace.add(world_.now_ns(), "launch %.*s: fails", static_cast<int>(instance_name.size()),
                     instance_name.data());
    return plain_error("sim launch", "injected launch failure");
  }
  uint64_t key = next_key_++;
  auto model = std::make_unique<Model>(*this, key);
  Model &m = *model;
  m.name = std::string(instance_name);
  m.reservation = spec.reservation_bytes;
  m.timeout_ns = spec.timeout_ms * 1'000'000ull;
  m.boot_timeout_ns = spec.boot_timeout_ms * 1'000'000ull;
  m.fd_out = next_fd_++;
  m.fd_in = next_fd_++;
  bool has_log = world_.chance(f.log_stream);
  m.fd_log = has_log ? next_fd_++ : -1;
  m.log_open = has_log;
  m.ignores_sigterm = world_.chance(f.ignores_sigterm);
  if (world_.chance(f.cleanup_stuck)) m.cleanup_stuck = true;
  else if (world_.chance(f.cleanup_busy)) m.cleanup_busy_left = static_cast<int>(world_.uniform(1, 5));
  backend::Launched launched;
  launched.to_instance = m.fd_in;
  launched.from_instance = m.fd_out;
  launched.log = m.fd_log;
  launched.backend_key = key;
  if (world_.chance(f.initial_input)) {
    launched.initial_input.assign(world_.uniform(1, 300), 'g');
    m.initial_left = launched.initial_input.size();
  }
  by_fd_[m.fd_out] = &m;
  by_fd_[m.fd_in] = &m;
  if (has_log) by_fd_[m.fd_log] = &m;
  held_bytes_ += m.reservation;
  ++launched_;
  uint64_t boot = world_.uniform(options_.boot_min_ns, options_.boot_max_ns);
  if (world_.chance(f.boot_slow)) boot = world_.uniform(m.boot_timeout_ns / 2, m.boot_timeout_ns * 3 / 2);
  world_.trace.add(world_.now_ns(), "launch %s: key %llu, boot in %.3f ms%s%s%s", m.name.c_str(),
                   static_cast<unsigned long long>(key), static_cast<double>(boot) / 1e6,
                   m.ignores_sigterm ? ", ignores SIGTERM" : "", m.cleanup_stuck ? ", cleanup stuck" : "",
                   m.initial_left > 0 ? ", initial input" : "");
  models_.emplace(key, std::move(model));
  if (options_.on_launch) options_.on_launch(spec.name);
  world_.after(boot, [this, key] {
    if (Model *mm = by_key(key)) mm->boot();
  });
  return launched;
}

Status SimBackend::cleanup(backend::Launched &launched) {
  Model *m = by_key(launched.backend_key);
  if (m == nullptr) {
    record_violation("cleanup of an unknown instance");
    return {};
  }
  ++m->cleanup_calls;
  if (!m->reaped) record_violation(m->name + ": cleanup before the process was reaped");
  if (m->cleaned) record_violation(m->name + ": cleanup after it succeeded");
  if (m->cleanup_stuck || m->cleanup_busy_left > 0) {
    if (m->cleanup_busy_left > 0) --m->cleanup_busy_left;
    return errno_error("sim cleanup", EBUSY);
  }
  m->cleaned = true;
  held_bytes_ -= m->reservation;
  world_.trace.add(world_.now_ns(), "model %s: cleaned", m->name.c_str());
  forget_if_done(*m);
  return {};
}

Result<uint64_t> SimBackend::memory_usage(const backend::Launched &launched) const {
  auto it = models_.find(launched.backend_key);
  if (it == models_.end()) return plain_error("not measured");
  return it->second->reservation / 2;
}

bool SimBackend::force_kill(backend::Launched &launched) {
  if (Model *m = by_key(launched.backend_key)) m->signal(SIGKILL);
  return false;
}

void SimBackend::close_fd(Model &m, int fd) {
  by_fd_.erase(fd);
  if (fd == m.fd_in) {
    m.in_open = false;
    m.input_closed();
  } else if (fd == m.fd_out) {
    m.out_open = false;
  } else if (fd == m.fd_log) {
    m.log_open = false;
  }
  for (Model::Slot s : {Model::Slot::read, Model::Slot::write, Model::Slot::log}) {
    Model::Op &o = m.op(s);
    int ofd = s == Model::Slot::read ? m.fd_out : s == Model::Slot::write ? m.fd_in : m.fd_log;
    if (o.c != nullptr && ofd == fd) record_violation(m.name + ": stream closed with an operation in flight");
  }
  if (!m.out_open && !m.in_open && !m.log_open && !m.cleaned && !m.given_up) {
    // Released by the pool after a cleanup that never succeeded: the pool gave up on it
    // (Instance::try_cleanup's attempt limit), which only a stuck cleanup may cause.
    m.given_up = true;
    ++given_up_;
    held_bytes_ -= m.reservation;
    if (!m.cleanup_stuck) record_violation(m.name + ": released without a successful cleanup");
  }
  forget_if_done(m);
}

void SimBackend::forget_if_done(Model &m) {
  if (m.out_open || m.in_open || m.log_open) return;
  if (!m.cleaned && !m.given_up) return;
  for (Model::Slot s : {Model::Slot::read, Model::Slot::write, Model::Slot::log, Model::Slot::exit}) {
    if (m.op(s).c != nullptr) record_violation(m.name + ": forgotten with an operation in flight");
  }
  models_.erase(m.key);  // m is gone
}

std::vector<std::string> SimBackend::lost() const {
  std::vector<std::string> out;
  for (const auto &[key, m] : models_) {
    std::string what = m->name + ":";
    if (m->alive) what += " still running";
    else if (!m->reaped) what += " never reaped";
    if (!m->cleaned && !m->given_up) what += " never cleaned (" + std::to_string(m->cleanup_calls) + " attempts)";
    if (m->out_open || m->in_open || m->log_open) what += " streams left open";
    out.push_back(what);
  }
  return out;
}

}  // namespace faasvisor::sim
