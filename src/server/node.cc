#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdio>
#include <cstring>

#include "server/backends.h"
#include "server/embed.h"
#include "server/node_impl.h"
#include "store/etcd_store.h"
#include "store/file_store.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor {
namespace {

Result<sockaddr_in> parse_listen(const std::string &text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return plain_error("--listen", "expected ADDR:PORT");
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  char *end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535)
    return plain_error("--listen", "bad port '" + port_text + "'");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (host == "localhost") host = "127.0.0.1";
  if (host.empty()) host = "0.0.0.0";
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    return plain_error("--listen", "bad IPv4 address '" + host + "'");
  return addr;
}

// The API's credentials and image roots (docs/security.md). A node that anyone on the network
// can reach must not take deployments from anyone: without credentials it listens on
// loopback only, unless told otherwise.
Status set_up_security(NodeImpl &node, const NodeOptions &options, const sockaddr_in &addr) {
  if (!options.basic_auth_dir.empty()) {
    auto credentials = api::read_basic_auth(options.basic_auth_dir);
    if (!credentials) return plain_error("--basic-auth-dir", credentials.error().message());
    node.basic_auth = std::move(*credentials);
  }
  bool loopback = (ntohl(addr.sin_addr.s_addr) >> 24) == 127;
  if (!node.basic_auth && !loopback && !options.insecure_no_auth)
    return plain_error("--listen",
                       "'" + options.listen + "' is not a loopback address and no --basic-auth-dir is given: "
                       "anyone who reaches it could deploy functions (--insecure-no-auth allows it anyway)");
  auto roots = api::ImageRoots::create(options.image_roots);
  if (!roots) return roots.error();
  node.image_roots = std::move(*roots);
  return {};
}

void on_accept(io::Completion &c, int result, uint32_t flags);
void on_signal(io::Completion &c, int result, uint32_t flags);
void on_shutdown_timer(io::Timer &t);
void on_accept_retry(io::Timer &t);

// io_uring's accept takes a descriptor before it looks for a connection: at the fd limit it
// fails at once, pending connection or not. Re-arming at once would spin the loop.
constexpr uint64_t kAcceptRetryNs = 100'000'000;

void raise_fd_limit() {
  // Each instance holds four descriptors (pidfd and three pipes) and each connection one.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

void arm_accept(NodeImpl &node) { node.ring->accept_multishot(node.accept_op, node.listen_fd); }

// Nodes made in this process so far: the first is node-<pid> (the name dead-node sweeps and
// scripts know), later ones node-<pid>-<n>, so that each has its own cgroups and run dir.
std::atomic<uint32_t> nodes_created{0};

std::string make_node_name() {
  uint32_t n = ++nodes_created;
  std::string name = "node-" + std::to_string(getpid());
  if (n > 1) name += "-" + std::to_string(n);
  return name;
}

void on_accept(io::Completion &c, int result, uint32_t flags) {
  auto &node = c.owner_as<NodeImpl>();
  if (result >= 0) {
    if (node.phase != NodeImpl::Phase::running) {
      ::close(result);
    } else if (node.connections.size() >= node.options.max_connections) {
      // Tell the client why instead of leaving it hanging. A fresh socket's send buffer is
      // empty, so this non-blocking send does not wait.
      static const std::string kRefusal = [] {
        std::string body = "{\"error\":\"the node's connection limit is reached\"}";
        return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
      }();
      (void)!send(result, kRefusal.data(), kRefusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      ::close(result);
      ++node.connections_refused;
    } else {
      int one = 1;
      setsockopt(result, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto *conn = new Connection(node, result);
      node.connections.push_back(*conn);
      ++node.connections_accepted;
      conn->start();
    }
  } else if (result != -ECANCELED && node.phase == NodeImpl::Phase::running) {
    // Once per episode, not once per retry.
    if (!node.accept_failing) FV_WARN("accept: %s (retrying every 100 ms)", std::strerror(-result));
    node.accept_failing = true;
  }
  if (result >= 0) node.accept_failing = false;
  // Multishot accept ends on errors (e.g. EMFILE): re-arm while we are still accepting,
  // after a pause if it failed.
  if (!(flags & IORING_CQE_F_MORE) && node.phase == NodeImpl::Phase::running && !c.in_flight) {
    if (result >= 0) arm_accept(node);
    else if (!node.accept_retry_timer.armed())
      node.timers->start(node.accept_retry_timer, monotonic_ns() + kAcceptRetryNs);
  }
}

void on_accept_retry(io::Timer &t) {
  auto &node = t.owner_as<NodeImpl>();
  if (node.phase == NodeImpl::Phase::running && !node.accept_op.in_flight) arm_accept(node);
}

void arm_signal(NodeImpl &node) {
  node.ring->read(node.signal_op, node.signal_fd, &node.signal_info, sizeof node.signal_info);
}

void on_signal(io::Completion &c, int result, uint32_t) {
  auto &node = c.owner_as<NodeImpl>();
  if (result == static_cast<int>(sizeof(signalfd_siginfo))) {
    FV_INFO("received %s: shutting down", sigabbrev_np(static_cast<int>(node.signal_info.ssi_signo)));
    node.begin_shutdown();
  } else if (result < 0 && result != -EINTR && result != -EAGAIN) {
    // A read that failed fails again: re-arming would spin the loop.
    if (result != -ECANCELED) FV_ERROR("reading the signalfd: %s: SIGINT/SIGTERM no longer stop the node", std::strerror(-result));
    return;
  }
  if (node.phase != NodeImpl::Phase::stopped) arm_signal(node);
}

void on_shutdown_timer(io::Timer &t) {
  auto &node = t.owner_as<NodeImpl>();
  if (node.final_deadline_armed) {
    node.connections.for_each([](Connection &conn) {
      conn.close();
      conn.maybe_free();
    });
  }
  if (node.phase == NodeImpl::Phase::draining) {
    FV_WARN("shutdown grace period over: stopping %llu running invocations",
            static_cast<unsigned long long>(node.pool->running_invocations()));
    node.phase = NodeImpl::Phase::stopping;
    node.pool->stop_all("node shutting down");
  }
  node.step_shutdown();
}

// The async journal, and the calls it holds that were not done when the last node stopped.
// They are queued again here, once the functions are back.
Status open_async(NodeImpl &node) {
  const NodeOptions &o = node.options;
  async::JournalOptions journal_options;
  if (o.state_dir != "none") journal_options.dir = o.state_dir + "/async";
  journal_options.max_record_bytes = static_cast<uint32_t>(
      std::min<uint64_t>(o.max_body_bytes + o.max_header_bytes + (1u << 20), UINT32_MAX));
  async::Replay replay;
  auto journal = async::Journal::open(*node.ring, journal_options, &replay);
  if (!journal) return journal.error();
  for (const std::string &d : replay.damage) FV_WARN("async journal: %s (the rest of that segment is ignored)", d.c_str());
  async::AsyncOptions async_options;
  async_options.max_memory_bytes = o.async_memory_bytes;
  async_options.callback_attempts = std::max<uint32_t>(1, o.async_callback_attempts);
  async_options.callback_backoff_ms = o.async_callback_backoff_ms;
  async_options.callback_timeout_ms = std::max<uint64_t>(1, o.async_callback_timeout_ms);
  node.async = std::make_unique<async::AsyncCalls>(*node.ring, *node.timers, *node.pool, std::move(*journal),
                                                   async_options);
  node.async->replay(replay);
  return {};
}

}  // namespace

// The helpers (faasvisor-stem, faasvisor-unpack, ...) are installed beside the daemon, or
// where an embedder says (helper_dir).
std::string helper_path(const NodeOptions &options, const char *name) {
  if (!options.helper_dir.empty()) return options.helper_dir + "/" + name;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return name;
  std::string path(exe, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + name;
}

void NodeImpl::begin_shutdown() {
  if (phase != Phase::running) return;
  phase = Phase::draining;
  timers->stop(accept_retry_timer);
  if (listen_fd >= 0) {
    ring->cancel(accept_op);
    ::close(listen_fd);  // stop accepting: new connections are refused by the kernel
    listen_fd = -1;
  }
  async->begin_shutdown();  // calls not done stay in the journal for the next start
  pool->begin_shutdown();
  images->shutdown();  // deploys waiting for an image are answered 503 as their helpers die
  // A shared store: leave the membership now (HAProxy's generator drops this node) and stop
  // applying other nodes' changes; changes already issued still complete.
  state->close();
  connections.for_each([](Connection &conn) {
    conn.close_when_idle();
    conn.maybe_free();
  });
  shutdown_timer.owner = this;
  shutdown_timer.callback = &on_shutdown_timer;
  timers->start(shutdown_timer, monotonic_ns() + options.shutdown_grace_ms * 1'000'000ull);
  step_shutdown();
}

// Advances the shutdown as far as it can go; called whenever something finishes.
void NodeImpl::step_shutdown() {
  if (phase == Phase::draining && pool->drained()) {
    phase = Phase::stopping;
    pool->stop_all("node shutting down");
  }
  if (phase == Phase::stopping && pool->empty()) {
    // Let the last responses (503s for what the grace period cut) reach their clients; a
    // client that does not read them is cut off by the final deadline.
    if (!final_deadline_armed) {
      final_deadline_armed = true;
      timers->start(shutdown_timer, monotonic_ns() + kFinalFlushNs);
    }
    connections.for_each([](Connection &conn) {
      conn.close_when_idle();
      conn.maybe_free();
    });
  }
  if (phase == Phase::stopping && pool->empty() && connections.empty() && state->idle() && async->idle()) {
    timers->stop(shutdown_timer);
    phase = Phase::stopped;
  }
}

void NodeImpl::connection_closed(Connection &conn) {
  connections.remove(conn);
  delete &conn;
}

std::unique_ptr<Node> Node::create(const NodeOptions &options, std::string *error) {
  auto impl = std::make_unique<NodeImpl>();
  impl->options = options;
  impl->started_ns = monotonic_ns();
  impl->http_limits.max_header_bytes = options.max_header_bytes;
  impl->http_limits.max_body_bytes = options.max_body_bytes;
  impl->node_name = make_node_name();

  // No listener: the node is driven through the embedding API only (loopback rules apply).
  bool listening = !options.listen.empty();
  auto addr = parse_listen(listening ? options.listen : "127.0.0.1:0");
  if (!addr) {
    *error = addr.error().message();
    return nullptr;
  }
  if (Status st = set_up_security(*impl, options, *addr); !st.ok()) {
    *error = st.error().message();
    return nullptr;
  }
  // Process-wide changes, only when asked (faasvisord asks).
  if (options.raise_fd_limit) raise_fd_limit();
  if (options.ignore_sigpipe) signal(SIGPIPE, SIG_IGN);

  if (Status st = check_backend_options(options); !st.ok()) {
    *error = st.error().message();
    return nullptr;
  }
  auto ring = io::Ring::create(options.ring_entries);
  if (!ring) {
    *error = ring.error().message();
    return nullptr;
  }
  impl->ring.reset(*ring);
  impl->timers = std::make_unique<io::TimerQueue>(impl->ring.get());
  if (!options.store.empty()) {
    // The bound address is known only below; the membership is named after it.
    if (options.store.rfind("etcd://", 0) != 0) {
      *error = "--store wants etcd://HOST:PORT[,HOST:PORT...], not '" + options.store + "'";
      return nullptr;
    }
  } else if (options.state_dir == "none") {
    impl->state = std::make_unique<store::MemoryStore>(*impl->ring);
  } else {
    store::FileStoreOptions state_options;
    state_options.dir = options.state_dir;
    auto state = store::FileStore::open(*impl->ring, state_options);
    if (!state) {
      *error = state.error().message() + " (another directory: --state-dir DIR; none: --state-dir none)";
      return nullptr;
    }
    impl->state = std::move(*state);
  }

  int fd = listening ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) : -1;
  int one = 1;
  // Not on a failed socket(): setsockopt's EBADF would replace the reason (EMFILE) in errno.
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listening && (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&*addr), sizeof *addr) < 0 ||
                    listen(fd, 4096) < 0)) {
    *error = "cannot listen on " + options.listen + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return nullptr;
  }
  if (listening) {
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &len);
    char host[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &bound.sin_addr, host, sizeof host);
    impl->bound_address = std::string(host) + ":" + std::to_string(ntohs(bound.sin_port));
  }
  impl->listen_fd = fd;
  impl->advertised = options.advertise.empty() ? impl->bound_address : options.advertise;
  if (!options.store.empty()) {
    auto endpoints = store::parse_etcd_endpoints(options.store);
    store::EtcdStoreOptions etcd_options;
    if (endpoints) etcd_options.endpoints = std::move(*endpoints);
    etcd_options.prefix = options.store_prefix;
    etcd_options.member = impl->advertised;
    auto etcd = endpoints ? store::EtcdStore::open(*impl->ring, *impl->timers, std::move(etcd_options))
                          : Result<std::unique_ptr<store::EtcdStore>>(endpoints.error());
    if (!etcd) {
      *error = etcd.error().message();
      if (fd >= 0) ::close(fd);
      return nullptr;
    }
    NodeImpl *node = impl.get();
    (*etcd)->set_member_source([node] { return node->member_json(); });
    impl->state = std::move(*etcd);
  }

  impl->cgroups = proc::CgroupTree::detect(impl->node_name);
  if (impl->cgroups.mode() == proc::CgroupMode::none)
    FV_WARN("instances run without cgroup limits: %s", impl->cgroups.why_none().c_str());

  pool::PoolOptions pool_options;
  pool_options.stop_grace_ms = options.stop_grace_ms;
  pool_options.memory_budget_bytes = options.memory_budget_bytes;
  if (pool_options.memory_budget_bytes == 0) {
    uint64_t ram = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    pool_options.memory_budget_bytes = ram / 5 * 4;
  }
  pool_options.memory_sample_ms = options.memory_sample_ms;
  pool_options.policy_time_scale = options.policy_time_scale;
  impl->pool = std::make_unique<pool::Pool>(*impl->ring, *impl->timers, pool_options);
  impl->pool->set_secrets(&impl->secret_table);
  net::NetworkOptions net_options;
  net_options.helper_path = options.network_helper_path.empty() ? helper_path(options, "faasvisor-net") : options.network_helper_path;
  net_options.dns = options.dns;
  net_options.subnet = options.network_subnet;
  if (!options.instance_network)
    net_options.disabled = "the embedder turned instance networking off (NodeOptions::instance_network)";
  else if (impl->node_name.find('-', 5) != std::string::npos)
    net_options.disabled = "another node in this process has the instance network (faasvisor-net names it by the pid)";
  impl->network = std::make_unique<net::Network>(*impl->ring, *impl->timers, net_options);
  {
    std::string why;
    if (options.instance_network && !impl->network->available(&why)) FV_WARN("instances cannot have a network (faasvisor.network=egress): %s", why.c_str());
  }
  impl->pool->set_network(impl->network.get());
  image::StoreOptions image_options;
  image_options.cache_dir = options.image_cache_dir;
  image_options.helper_path = options.unpack_path.empty() ? helper_path(options, "faasvisor-unpack") : options.unpack_path;
  image_options.registry_auth = options.registry_auth;
  image_options.insecure_registries = options.insecure_registries;
  image_options.cache_max_bytes = options.image_cache_max_bytes;
  image_options.in_use = [node = impl.get()] {
    std::vector<std::string> digests;
    node->pool->for_each_function([&](const pool::Function &fn) {
      if (!fn.spec().image_digest.empty()) digests.push_back(fn.spec().image_digest);
    });
    return digests;
  };
  image_options.peers = [node = impl.get()] { return node->state->peers(); };
  if (impl->basic_auth)  // the nodes of a cluster share credentials: its own open its peers
    image_options.peer_authorization =
        "Basic " + base64_encode(impl->basic_auth->user + ":" + impl->basic_auth->password);
  image_options.max_fetch_bytes = options.max_image_bytes;
  impl->images = std::make_unique<image::Store>(*impl->ring, *impl->timers, image_options);
  add_backends(*impl, options);

  // Every function comes back before the node serves: the listener is bound, but nothing is
  // accepted until run() turns the loop, so /healthz answers only after this.
  if (Status st = impl->restore_state(); !st.ok()) {
    *error = st.error().message();
    return nullptr;
  }
  // Then the async calls not done when the last node stopped: their functions are back.
  if (Status st = open_async(*impl); !st.ok()) {
    *error = st.error().message();
    return nullptr;
  }
  impl->state->watch(*impl);
  if (std::string e = start_embedding(*impl); !e.empty()) {
    *error = e;
    return nullptr;
  }

  if (options.handle_signals) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    impl->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (impl->signal_fd < 0) {
      // Without it SIGTERM would do nothing (the signals are blocked): refuse to run.
      *error = std::string("cannot create a signalfd for SIGINT/SIGTERM: ") + std::strerror(errno);
      sigprocmask(SIG_UNBLOCK, &mask, nullptr);
      return nullptr;
    }
    impl->signal_op.owner = impl.get();
    impl->signal_op.callback = &on_signal;
    arm_signal(*impl);
  }
  impl->accept_op.owner = impl.get();
  impl->accept_op.callback = &on_accept;
  impl->accept_retry_timer.owner = impl.get();
  impl->accept_retry_timer.callback = &on_accept_retry;
  if (impl->listen_fd >= 0) arm_accept(*impl);
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::Node(std::unique_ptr<NodeImpl> impl) : impl_(std::move(impl)) {}

Node::~Node() {
  NodeImpl &node = *impl_;
  if (node.phase != NodeImpl::Phase::stopped) {
    // Destroyed without run() finishing: stop everything now, synchronously.
    node.begin_shutdown();
    node.phase = NodeImpl::Phase::stopping;
    node.pool->stop_all("node destroyed");
    while (node.phase != NodeImpl::Phase::stopped) {
      node.timers->sync_kernel_timeout();
      node.ring->run_once();
      node.pool->run_completed();
      node.step_shutdown();
      node.pool->run_completed();
    }
  }
  // Drain the completions still armed on the node itself (signal read, kernel timeout).
  node.ring->cancel(node.signal_op);
  node.timers->stop(node.shutdown_timer);
  node.timers->stop(node.accept_retry_timer);
  node.images->shutdown();
  node.state->close();
  node.network->shutdown();
  stop_embedding(node);
  while (node.signal_op.in_flight || node.accept_op.in_flight || !node.images->idle() || !node.state->idle() ||
         !node.async->idle() || !node.network->idle() || !node.embed->idle()) {
    node.timers->sync_kernel_timeout();  // the store's requests have deadlines
    node.ring->run_once();
    node.pool->run_completed();
  }
  node.async.reset();
  if (node.signal_fd >= 0) ::close(node.signal_fd);
  // The backends release their prepared sandboxes (and those sandboxes' cgroups) first;
  // only then is the node's cgroup subtree empty enough to remove.
  node.pool.reset();
  node.network.reset();  // its table, bridge and namespaces (blocking: the node has stopped)
  node.cgroups.remove_roots();
}

std::string Node::listen_address() const { return impl_->bound_address; }
std::string Node::id() const { return impl_->node_name; }
std::vector<std::string> Node::cgroup_roots() const { return impl_->cgroups.roots(); }
std::string Node::run_dir() const { return "/run/faasvisor/" + impl_->node_name; }

int Node::run() {
  NodeImpl &node = *impl_;
  // Printed whatever the log level when asked (faasvisord): scripts started with port 0 read it.
  if (node.options.print_banner)
    std::fprintf(stderr, "faasvisord: listening on %s (cgroups: %s)\n", node.bound_address.c_str(),
                 proc::to_string(node.cgroups.mode()));
  while (node.phase != NodeImpl::Phase::stopped) turn_loop(node, true);
  FV_INFO("stopped");
  return node.exit_code;
}

}  // namespace faasvisor
