// The store on etcd (--store etcd://HOST:PORT[,...]): every node of a cluster keeps its
// records under one prefix, watches it, and hears the others' changes (docs/cluster.md).
//
// Keys: PREFIX/KIND/KEY for the shared kinds (function, secret, scale: every node serves
// them), PREFIX/node/MEMBER/KIND/KEY for the node's own kinds (call: an accepted async call
// is run by the node that took it), PREFIX/members/MEMBER for the membership record, which
// lives under a lease (TTL member_ttl_s) the node keeps alive: a dead node's record goes
// away by itself. Values are the record bytes; the gateway carries keys and values base64.
//
// Everything runs on the node's ring over three HTTP connections to the gateway: changes
// (puts and deletes, one at a time, so the order per key is the issue order), the watch (one
// streaming POST /v3/watch from the last revision seen + 1), and control (lease grant and
// keepalive every second, the membership record, which doubles as the health probe: lease
// operations need a quorum). A connection error moves to the next endpoint at once; a
// request with no answer in request_timeout_ms, or a round of endpoints that all refused,
// marks etcd unreachable: changes are then refused (unavailable() says why, the node answers
// 503) until a keepalive succeeds again, and the next watch starts with a full re-read so
// that a change etcd never committed is undone on this node too.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/timer.h"
#include "store/etcd_http.h"
#include "store/store.h"

namespace faasvisor::store {

struct EtcdStoreOptions {
  std::vector<EtcdEndpoint> endpoints;
  std::string prefix = "/faasvisor";
  std::vector<std::string> shared_kinds = {"function", "secret", "scale"};
  std::vector<std::string> own_kinds = {"call"};
  std::string member;                 // this node's name in the cluster (its advertised address)
  uint64_t request_timeout_ms = 2000;
  uint64_t member_ttl_s = 5;
  uint32_t max_queued = 4096;
  uint32_t max_record_bytes = 1u << 20;  // etcd refuses requests over 1.5 MiB by default
};

struct EtcdStats {
  uint64_t watch_events = 0;     // changes delivered from the watch
  uint64_t watch_restarts = 0;   // watch streams (re)started
  uint64_t resyncs = 0;          // full re-reads of the prefix
  uint64_t revision = 0;         // the last etcd revision seen
  bool reachable = false;
};

class EtcdStore final : public Store {
 public:
  static Result<std::unique_ptr<EtcdStore>> open(io::Ring &ring, io::TimerQueue &timers, EtcdStoreOptions options);
  ~EtcdStore() override;

  // The membership record's value, asked for at every refresh (a JSON object).
  void set_member_source(std::function<std::string()> describe) { describe_member_ = std::move(describe); }

  Result<LoadReport> load_all() override;
  Status put(std::string_view kind, std::string_view key, std::string value, Done done) override;
  Status remove(std::string_view kind, std::string_view key, Done done) override;
  bool idle() const override;
  bool full() const override { return queue_.size() >= options_.max_queued; }
  bool durable() const override { return true; }
  std::string describe() const override;
  const StoreStats &stats() const override { return stats_; }
  void watch(ChangeListener &listener) override;
  std::string unavailable() const override;
  void close() override;
  std::vector<std::string> peers() const override;
  const EtcdStats &etcd_stats() const { return etcd_stats_; }

 private:
  struct Change {
    std::string etcd_key;
    std::string value;
    bool is_remove = false;
    bool resync = false;  // not a change: the full re-read before a watch restarts
    Done done;
    uint32_t attempts = 0;
    // A shared record: what this node believed before the change, put back (and delivered
    // to the listener) if etcd cannot be reached to make it.
    std::string kind, key;
    std::optional<std::string> previous;
  };
  template <void (EtcdStore::*Body)(std::string &), void (EtcdStore::*Response)(Status, int, std::string)>
  struct SinkOf final : EtcdConnection::Sink {
    explicit SinkOf(EtcdStore &s) : store(s) {}
    void on_body(std::string &body) override { (store.*Body)(body); }
    void on_response(Status st, int code, std::string body) override { (store.*Response)(st, code, std::move(body)); }
    EtcdStore &store;
  };
  void keep_body(std::string &) {}
  void watch_body(std::string &body);
  void change_done(Status st, int code, std::string body);
  void watch_ended(Status st, int code, std::string body);
  void control_done(Status st, int code, std::string body);

  EtcdStore(io::Ring &ring, io::TimerQueue &timers, EtcdStoreOptions options);
  Result<std::string> etcd_key(std::string_view kind, std::string_view key) const;
  bool split_key(std::string_view etcd_key, std::string &kind, std::string &key) const;
  bool shared(std::string_view kind) const;
  // members: the membership names the range holds (other than this node's), if asked.
  Result<std::vector<Record>> parse_range(std::string_view body, uint64_t &revision,
                                          std::set<std::string> *members = nullptr) const;
  bool member_name(std::string_view etcd_key, std::string &name) const;
  Status issue(Change change, std::optional<std::string> believed);
  void pump();
  void fail_queue(const Error &error);
  void revert(Change &change);
  void start_watch();
  void restart_watch_with_resync();
  void apply_range(std::string_view body);
  void deliver(std::string kind, std::string key, std::optional<std::string> value);
  void mark_unreachable(const Error &error);
  void tick();
  static void on_tick(io::Timer &t);
  static void on_watch_retry(io::Timer &t);
  const EtcdEndpoint &endpoint(size_t i) const { return options_.endpoints[i % options_.endpoints.size()]; }

  io::Ring &ring_;
  io::TimerQueue &timers_;
  EtcdStoreOptions options_;
  ChangeListener *listener_ = nullptr;
  std::function<std::string()> describe_member_;

  EtcdConnection changes_conn_;
  EtcdConnection watch_conn_;
  EtcdConnection control_conn_;
  SinkOf<&EtcdStore::keep_body, &EtcdStore::change_done> change_sink_{*this};
  SinkOf<&EtcdStore::watch_body, &EtcdStore::watch_ended> watch_sink_{*this};
  SinkOf<&EtcdStore::keep_body, &EtcdStore::control_done> control_sink_{*this};
  size_t changes_ep_ = 0, watch_ep_ = 0, control_ep_ = 0;

  std::deque<Change> queue_;  // the front one is in flight on changes_conn_
  // What this node believes each shared key holds (issued by it, or seen): a watch event
  // that repeats it is this node's own change coming back, not delivered.
  std::unordered_map<std::string, std::string> known_;
  std::set<std::string> members_;  // the other nodes' membership records, by name (PREFIX/members/NAME)
  uint64_t revision_ = 0;
  bool reachable_ = true;
  std::string unreachable_why_;
  bool resync_pending_ = false;  // re-read everything before the next watch
  bool resync_queued_ = false;
  bool closed_ = false;
  uint32_t watch_failures_ = 0;  // in a row: the retry backs off, and only the first is logged

  enum class ControlStep { none, grant, keepalive, member, revoke };
  ControlStep control_step_ = ControlStep::none;
  uint32_t control_failures_ = 0;  // in a row, this round of endpoints
  int64_t lease_ = 0;
  std::string member_value_;      // last put
  uint32_t ticks_since_member_put_ = 0;
  io::Timer tick_timer_;
  io::Timer watch_retry_;
  StoreStats stats_;
  EtcdStats etcd_stats_;
};

}  // namespace faasvisor::store
