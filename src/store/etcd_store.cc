#include "store/etcd_store.h"

#include <algorithm>
#include <cassert>
#include <simdjson.h>

#include "util/base64.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/number.h"

namespace faasvisor::store {
namespace {

constexpr uint64_t kTickNs = 1'000'000'000;
constexpr uint64_t kWatchRetryNs = 200'000'000;
constexpr uint64_t kControlTimeoutMs = 1500;
constexpr uint32_t kMemberRefreshTicks = 5;  // the load in the membership record: at least this often
constexpr size_t kMaxWatchLineBytes = 16u << 20;

// etcd encodes 64-bit integers as JSON strings; accept numbers too.
uint64_t json_u64(simdjson::dom::element e) {
  std::string_view s;
  if (e.get_string().get(s) == simdjson::SUCCESS) return parse_decimal(s).value_or(0);
  uint64_t v = 0;
  if (e.get_uint64().get(v) == simdjson::SUCCESS) return v;
  int64_t i = 0;
  if (e.get_int64().get(i) == simdjson::SUCCESS && i > 0) return static_cast<uint64_t>(i);
  return 0;
}

int64_t json_i64(simdjson::dom::element e) {
  std::string_view s;
  if (e.get_string().get(s) == simdjson::SUCCESS) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size() ? v : 0;
  }
  int64_t v = 0;
  return e.get_int64().get(v) == simdjson::SUCCESS ? v : 0;
}

// Leaves `out` as it was when the field is absent (etcd leaves out empty values and the
// default type, PUT).
template <typename T>
void get_optional(simdjson::simdjson_result<simdjson::dom::element> field, T &out) {
  T value{};
  if (field.get(value) == simdjson::SUCCESS) out = value;
}

std::string kv_json(std::string_view key) { return "{\"key\":\"" + base64_encode(key) + "\""; }

// The bytes after the last '/' + 1: etcd's range_end for "everything under prefix/".
std::string range_json(const std::string &prefix) {
  return "{\"key\":\"" + base64_encode(prefix + "/") + "\",\"range_end\":\"" + base64_encode(prefix + "0") + "\"";
}

std::string short_text(std::string_view body) {
  std::string s(body.substr(0, 200));
  for (char &c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

Result<std::unique_ptr<EtcdStore>> EtcdStore::open(io::Ring &ring, io::TimerQueue &timers, EtcdStoreOptions options) {
  if (options.endpoints.empty()) return plain_error("--store etcd://", "no endpoint");
  const std::string &p = options.prefix;
  if (p.size() < 2 || p[0] != '/' || p.back() == '/' || p.find("//") != std::string::npos)
    return plain_error("--store-prefix", "'" + p + "' is not /NAME[/NAME...]");
  if (options.member.empty() || options.member.find('/') != std::string::npos)
    return plain_error("etcd store", "the member name is empty or has a '/'");
  return std::unique_ptr<EtcdStore>(new EtcdStore(ring, timers, std::move(options)));
}

EtcdStore::EtcdStore(io::Ring &ring, io::TimerQueue &timers, EtcdStoreOptions options)
    : ring_(ring), timers_(timers), options_(std::move(options)), changes_conn_(ring, timers),
      watch_conn_(ring, timers), control_conn_(ring, timers) {
  tick_timer_.owner = this;
  tick_timer_.callback = &on_tick;
  watch_retry_.owner = this;
  watch_retry_.callback = &on_watch_retry;
}

EtcdStore::~EtcdStore() {
  assert(changes_conn_.quiescent() && watch_conn_.quiescent() && control_conn_.quiescent());
  timers_.stop(tick_timer_);
  timers_.stop(watch_retry_);
}

std::string EtcdStore::describe() const {
  std::string out = "etcd://";
  for (size_t i = 0; i < options_.endpoints.size(); ++i) out += (i ? "," : "") + options_.endpoints[i].text;
  return out + options_.prefix;
}

bool EtcdStore::idle() const {
  if (!queue_.empty()) return false;
  if (!closed_) return true;
  return !watch_conn_.busy() && !control_conn_.busy() && !changes_conn_.busy() && watch_conn_.quiescent() &&
         control_conn_.quiescent() && changes_conn_.quiescent();
}

std::string EtcdStore::unavailable() const {
  if (closed_) return "the node is shutting down: make changes through another node";
  if (reachable_) return {};
  return "etcd is unreachable (" + unreachable_why_ +
         "): changes are refused until it answers again; deployed functions keep serving";
}

Result<std::string> EtcdStore::etcd_key(std::string_view kind, std::string_view key) const {
  if (!valid_key(key)) return plain_error("store", "bad record key '" + std::string(key) + "'");
  auto has = [&](const std::vector<std::string> &v) { return std::find(v.begin(), v.end(), kind) != v.end(); };
  if (has(options_.shared_kinds)) return options_.prefix + "/" + std::string(kind) + "/" + std::string(key);
  if (has(options_.own_kinds))
    return options_.prefix + "/node/" + options_.member + "/" + std::string(kind) + "/" + std::string(key);
  return plain_error("store", "unknown record kind '" + std::string(kind) + "'");
}

bool EtcdStore::shared(std::string_view kind) const {
  return std::find(options_.shared_kinds.begin(), options_.shared_kinds.end(), kind) != options_.shared_kinds.end();
}

// PREFIX/KIND/KEY of a shared kind, or PREFIX/node/MEMBER/KIND/KEY of this node's own.
bool EtcdStore::split_key(std::string_view k, std::string &kind, std::string &key) const {
  if (k.size() <= options_.prefix.size() + 1 || k.substr(0, options_.prefix.size()) != options_.prefix ||
      k[options_.prefix.size()] != '/')
    return false;
  k.remove_prefix(options_.prefix.size() + 1);
  const std::vector<std::string> *kinds = &options_.shared_kinds;
  std::string own = "node/" + options_.member + "/";
  if (k.substr(0, own.size()) == own) {
    k.remove_prefix(own.size());
    kinds = &options_.own_kinds;
  }
  size_t slash = k.find('/');
  if (slash == std::string_view::npos) return false;
  kind = std::string(k.substr(0, slash));
  key = std::string(k.substr(slash + 1));
  return std::find(kinds->begin(), kinds->end(), kind) != kinds->end() && valid_key(key);
}

// PREFIX/members/NAME of another node.
bool EtcdStore::member_name(std::string_view k, std::string &name) const {
  std::string members = options_.prefix + "/members/";
  if (k.size() <= members.size() || k.substr(0, members.size()) != members) return false;
  name = std::string(k.substr(members.size()));
  return name != options_.member && name.find('/') == std::string::npos;
}

std::vector<std::string> EtcdStore::peers() const { return {members_.begin(), members_.end()}; }

// The records of a range answer (this node's kinds only) and the revision it was read at.
Result<std::vector<Record>> EtcdStore::parse_range(std::string_view body, uint64_t &revision,
                                                   std::set<std::string> *members) const {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS) return plain_error("etcd", "range answer is not JSON");
  simdjson::dom::element header;
  if (doc["header"].get(header) == simdjson::SUCCESS) revision = json_u64(header["revision"].value_unsafe());
  std::vector<Record> out;
  simdjson::dom::array kvs;
  if (doc["kvs"].get(kvs) != simdjson::SUCCESS) return out;
  for (simdjson::dom::element kv : kvs) {
    std::string_view k64, v64;
    if (kv["key"].get(k64) != simdjson::SUCCESS) continue;
    get_optional(kv["value"], v64);
    auto k = base64_decode(k64);
    auto v = base64_decode(v64);
    std::string kind, key, member;
    if (k && members != nullptr && member_name(*k, member)) members->insert(std::move(member));
    if (!k || !v || !split_key(*k, kind, key)) continue;
    out.push_back(Record{std::move(kind), std::move(key), std::move(*v)});
  }
  return out;
}

Result<LoadReport> EtcdStore::load_all() {
  Error last = plain_error("etcd", "no endpoint");
  for (size_t i = 0; i < options_.endpoints.size(); ++i) {
    auto resp = blocking_post(endpoint(i), "/v3/kv/range", range_json(options_.prefix) + "}",
                              options_.request_timeout_ms);
    if (!resp) {
      last = resp.error();
      continue;
    }
    if (resp->status != 200) {
      last = plain_error("etcd", endpoint(i).text + " answered " + std::to_string(resp->status) + ": " +
                                     short_text(resp->body));
      continue;
    }
    uint64_t revision = 0;
    members_.clear();
    auto records = parse_range(resp->body, revision, &members_);
    if (!records) {
      last = records.error();
      continue;
    }
    revision_ = revision;
    LoadReport report;
    for (Record &rec : *records) {
      if (shared(rec.kind)) known_[rec.kind + "/" + rec.key] = rec.value;
      report.records.push_back(std::move(rec));
    }
    changes_ep_ = watch_ep_ = control_ep_ = i;
    etcd_stats_.revision = revision_;
    etcd_stats_.reachable = true;
    return report;
  }
  Error e = last;
  e.context = "etcd: no endpoint answered a read of the store";
  e.detail = last.message();
  e.errno_value = 0;
  return e;
}

void EtcdStore::watch(ChangeListener &listener) {
  listener_ = &listener;
  start_watch();
  timers_.start(tick_timer_, monotonic_ns());  // register the membership now
}

Status EtcdStore::put(std::string_view kind, std::string_view key, std::string value, Done done) {
  auto k = etcd_key(kind, key);
  if (!k) return k.error();
  if (value.size() > options_.max_record_bytes) return errno_error("store: record too big for etcd", EFBIG);
  Change c{std::move(*k), value, false, false, std::move(done), 0, std::string(kind), std::string(key), {}};
  return issue(std::move(c), shared(kind) ? std::optional<std::string>(std::move(value)) : std::nullopt);
}

Status EtcdStore::remove(std::string_view kind, std::string_view key, Done done) {
  auto k = etcd_key(kind, key);
  if (!k) return k.error();
  Change c{std::move(*k), {}, true, false, std::move(done), 0, std::string(kind), std::string(key), {}};
  return issue(std::move(c), std::nullopt);
}

// `believed`: a shared record's value after this change (nullopt: absent, or not shared).
Status EtcdStore::issue(Change change, std::optional<std::string> believed) {
  if (closed_) return plain_error("store", "closed");
  if (!reachable_) return Error{ENOTCONN, "etcd is unreachable", unreachable_why_};
  if (full()) {
    ++stats_.refused;
    return errno_error("store: too many changes waiting for etcd", EAGAIN);
  }
  if (shared(change.kind)) {
    std::string id = change.kind + "/" + change.key;
    auto it = known_.find(id);
    if (it != known_.end()) change.previous = it->second;
    if (believed) known_[id] = std::move(*believed);
    else if (it != known_.end()) known_.erase(it);
  }
  queue_.push_back(std::move(change));
  stats_.queued_now = queue_.size();
  pump();
  return {};
}

void EtcdStore::pump() {
  if (queue_.empty() || changes_conn_.busy() || !changes_conn_.quiescent()) return;
  Change &c = queue_.front();
  const EtcdEndpoint &ep = endpoint(changes_ep_);
  if (c.resync) return changes_conn_.request(ep, "/v3/kv/range", range_json(options_.prefix) + "}",
                                             options_.request_timeout_ms, change_sink_);
  if (c.is_remove)
    return changes_conn_.request(ep, "/v3/kv/deleterange", kv_json(c.etcd_key) + "}", options_.request_timeout_ms,
                                 change_sink_);
  changes_conn_.request(ep, "/v3/kv/put", kv_json(c.etcd_key) + ",\"value\":\"" + base64_encode(c.value) + "\"}",
                        options_.request_timeout_ms, change_sink_);
}

void EtcdStore::change_done(Status st, int code, std::string body) {
  assert(!queue_.empty());
  Change &c = queue_.front();
  if (st.ok() && code == 200) {
    Change done = std::move(c);
    queue_.pop_front();
    stats_.queued_now = queue_.size();
    if (done.resync) {
      resync_queued_ = false;
      apply_range(body);
    } else {
      ++(done.is_remove ? stats_.removes : stats_.puts);
      done.done(Status{});
    }
    return pump();
  }
  Error error = st.ok() ? plain_error("etcd", endpoint(changes_ep_).text + " answered " + std::to_string(code) +
                                                  ": " + short_text(body))
                        : st.error();
  if (!st.ok()) error.detail = endpoint(changes_ep_).text + (error.detail.empty() ? "" : ": " + error.detail);
  if (st.ok() && code < 500) {
    // etcd refused this change itself (too large, bad request): only it fails.
    Change failed = std::move(c);
    queue_.pop_front();
    stats_.queued_now = queue_.size();
    ++stats_.failed;
    if (failed.resync) {
      resync_queued_ = false;
    } else {
      failed.done(error);
      revert(failed);
    }
    return pump();
  }
  ++changes_ep_;
  bool refused = !st.ok() && st.error().errno_value != ETIMEDOUT;
  if (refused && ++c.attempts < options_.endpoints.size()) return pump();  // the next endpoint
  mark_unreachable(error);
  fail_queue(error);
}

void EtcdStore::fail_queue(const Error &error) {
  std::deque<Change> failed;
  failed.swap(queue_);
  stats_.queued_now = 0;
  resync_queued_ = false;
  Error e{error.errno_value ? error.errno_value : ENOTCONN, "etcd is unreachable", error.message()};
  for (Change &c : failed) {
    if (c.resync) continue;  // the watch retries it once etcd is back
    ++stats_.failed;
    c.done(e);
  }
  // Newest first: each change's `previous` is what the one before it made.
  for (auto it = failed.rbegin(); it != failed.rend(); ++it)
    if (!it->resync) revert(*it);
}

// The node made the change before asking etcd; etcd could not be asked, so the node goes
// back to what it had. (If etcd did commit it after all, the re-read at reconnection brings
// it back: etcd decides.)
void EtcdStore::revert(Change &c) {
  if (!shared(c.kind) || listener_ == nullptr) return;
  std::string id = c.kind + "/" + c.key;
  if (c.previous) {
    known_[id] = *c.previous;
    listener_->record_put(Record{c.kind, c.key, std::move(*c.previous)});
  } else if (known_.erase(id) > 0 || !c.is_remove) {
    listener_->record_removed(c.kind, c.key);
  }
}

void EtcdStore::mark_unreachable(const Error &error) {
  if (!reachable_) return;
  reachable_ = false;
  etcd_stats_.reachable = false;
  unreachable_why_ = error.message();
  FV_WARN("etcd unreachable (%s): changes answer 503 until it is back", unreachable_why_.c_str());
}

void EtcdStore::start_watch() {
  if (closed_ || watch_conn_.busy() || !watch_conn_.quiescent() || listener_ == nullptr) return;
  if (resync_pending_) {
    if (!resync_queued_) {
      resync_queued_ = true;
      queue_.push_back(Change{{}, {}, false, true, {}, 0, {}, {}, {}});
      stats_.queued_now = queue_.size();
      pump();
    }
    return;
  }
  ++etcd_stats_.watch_restarts;
  std::string body = "{\"create_request\":" + range_json(options_.prefix) +
                     ",\"start_revision\":\"" + std::to_string(revision_ + 1) + "\"}}";
  watch_conn_.request(endpoint(watch_ep_), "/v3/watch", body, 0, watch_sink_);
}

void EtcdStore::restart_watch_with_resync() {
  resync_pending_ = true;
  if (watch_conn_.busy()) return watch_conn_.abort();  // watch_ended goes on
  if (!watch_retry_.armed()) timers_.start(watch_retry_, monotonic_ns());
}

void EtcdStore::on_watch_retry(io::Timer &t) { t.owner_as<EtcdStore>().start_watch(); }

void EtcdStore::watch_ended(Status st, int code, std::string body) {
  if (closed_) return;
  uint64_t delay_ns = kWatchRetryNs;
  if (!st.ok() || code != 200) {
    bool cancelled = !st.ok() && st.error().errno_value == ECANCELED;  // by this store: at once
    if (!cancelled && watch_failures_++ == 0)
      FV_WARN("etcd: the watch on %s ended (%s); watching again from revision %llu",
              endpoint(watch_ep_).text.c_str(), st.ok() ? short_text(body).c_str() : st.error().message().c_str(),
              static_cast<unsigned long long>(revision_ + 1));
    ++watch_ep_;
    if (cancelled) delay_ns = 0;
    else delay_ns = std::min<uint64_t>(kWatchRetryNs << std::min<uint32_t>(watch_failures_, 4), 2 * kTickNs);
  }
  timers_.start(watch_retry_, monotonic_ns() + delay_ns);
}

void EtcdStore::watch_body(std::string &body) {
  size_t start = 0;
  for (size_t nl; (nl = body.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(body.data() + start, nl - start);
    simdjson::dom::parser parser;
    simdjson::dom::element doc, result;
    if (line.empty()) continue;
    if (parser.parse(line).get(doc) != simdjson::SUCCESS || doc["result"].get(result) != simdjson::SUCCESS) {
      // Not the line itself: it may carry a secret's value (base64 is not a disguise).
      FV_WARN("etcd: the watch sent %zu bytes that are not an event; watching again", line.size());
      body.clear();
      return watch_conn_.abort();
    }
    watch_failures_ = 0;  // the stream answers
    bool canceled = false;
    get_optional(result["canceled"], canceled);
    if (canceled) {
      uint64_t compacted = 0;
      simdjson::dom::element cr;
      if (result["compact_revision"].get(cr) == simdjson::SUCCESS) compacted = json_u64(cr);
      FV_WARN("etcd: the watch was cancelled (compacted at %llu): reading everything again",
              static_cast<unsigned long long>(compacted));
      body.clear();
      resync_pending_ = true;
      return watch_conn_.abort();
    }
    simdjson::dom::array events;
    if (result["events"].get(events) != simdjson::SUCCESS) continue;
    for (simdjson::dom::element ev : events) {
      simdjson::dom::element kv;
      if (ev["kv"].get(kv) != simdjson::SUCCESS) continue;
      std::string_view type = "PUT", k64, v64;
      get_optional(ev["type"], type);
      get_optional(kv["value"], v64);
      simdjson::dom::element mod;
      if (kv["mod_revision"].get(mod) == simdjson::SUCCESS) revision_ = std::max(revision_, json_u64(mod));
      if (kv["key"].get(k64) != simdjson::SUCCESS) continue;
      auto k = base64_decode(k64);
      auto v = base64_decode(v64);
      std::string kind, key, member;
      if (k && member_name(*k, member)) {
        if (type == "DELETE") members_.erase(member);
        else members_.insert(std::move(member));
        continue;
      }
      if (!k || !v || !split_key(*k, kind, key)) continue;
      if (!shared(kind)) continue;  // this node's own records: it wrote them
      ++etcd_stats_.watch_events;
      deliver(std::move(kind), std::move(key), type == "DELETE" ? std::nullopt : std::optional<std::string>(*v));
    }
    etcd_stats_.revision = revision_;
  }
  body.erase(0, start);
  if (body.size() > kMaxWatchLineBytes) {
    body.clear();
    watch_conn_.abort();
  }
}

void EtcdStore::deliver(std::string kind, std::string key, std::optional<std::string> value) {
  std::string id = kind + "/" + key;
  auto it = known_.find(id);
  if (value) {
    if (it != known_.end() && it->second == *value) return;  // this node's own change, or already applied
    known_[id] = *value;
    if (listener_ != nullptr) listener_->record_put(Record{std::move(kind), std::move(key), std::move(*value)});
  } else {
    if (it == known_.end()) return;
    known_.erase(it);
    if (listener_ != nullptr) listener_->record_removed(kind, key);
  }
}

// The answer of the full re-read: everything that differs from what this node believes is
// delivered, and the watch goes on from the read's revision.
void EtcdStore::apply_range(std::string_view body) {
  uint64_t revision = 0;
  std::set<std::string> members;
  auto records = parse_range(body, revision, &members);
  if (!records) {
    FV_WARN("etcd: the re-read answer is not JSON; trying again");
    timers_.start(watch_retry_, monotonic_ns() + kTickNs);
    return;
  }
  std::unordered_map<std::string, std::string> now;
  for (Record &rec : *records)
    if (shared(rec.kind)) now[rec.kind + "/" + rec.key] = std::move(rec.value);
  std::vector<std::string> gone;
  for (const auto &[id, value] : known_)
    if (!now.count(id)) gone.push_back(id);
  for (const std::string &id : gone) {
    size_t slash = id.find('/');
    deliver(id.substr(0, slash), id.substr(slash + 1), std::nullopt);
  }
  for (auto &[id, value] : now) {
    size_t slash = id.find('/');
    deliver(id.substr(0, slash), id.substr(slash + 1), std::move(value));
  }
  members_ = std::move(members);
  revision_ = revision;
  etcd_stats_.revision = revision_;
  ++etcd_stats_.resyncs;
  resync_pending_ = false;
  FV_INFO("etcd: read the store again at revision %llu (%zu removed here)", static_cast<unsigned long long>(revision_),
          gone.size());
  start_watch();
}

void EtcdStore::on_tick(io::Timer &t) { t.owner_as<EtcdStore>().tick(); }

void EtcdStore::tick() {
  if (closed_) return;
  timers_.start(tick_timer_, monotonic_ns() + kTickNs);
  if (control_conn_.busy() || !control_conn_.quiescent()) return;
  ++ticks_since_member_put_;
  const EtcdEndpoint &ep = endpoint(control_ep_);
  if (lease_ == 0) {
    control_step_ = ControlStep::grant;
    return control_conn_.request(ep, "/v3/lease/grant", "{\"TTL\":\"" + std::to_string(options_.member_ttl_s) + "\"}",
                                 kControlTimeoutMs, control_sink_);
  }
  control_step_ = ControlStep::keepalive;
  control_conn_.request(ep, "/v3/lease/keepalive", "{\"ID\":\"" + std::to_string(lease_) + "\"}", kControlTimeoutMs,
                        control_sink_);
}

void EtcdStore::control_done(Status st, int code, std::string body) {
  ControlStep step = control_step_;
  control_step_ = ControlStep::none;
  const EtcdEndpoint &ep = endpoint(control_ep_);
  auto send = [&](ControlStep next, std::string_view path, std::string json, uint64_t timeout_ms) {
    control_step_ = next;
    control_conn_.request(endpoint(control_ep_), path, json, timeout_ms, control_sink_);
  };
  if (closed_) {
    // Leaving: give the membership back at once rather than after its TTL.
    if (step != ControlStep::revoke && lease_ != 0)
      send(ControlStep::revoke, "/v3/lease/revoke", "{\"ID\":\"" + std::to_string(lease_) + "\"}", 500);
    lease_ = step == ControlStep::revoke ? 0 : lease_;
    return;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  bool ok = st.ok() && code == 200 && parser.parse(body).get(doc) == simdjson::SUCCESS;
  if (!ok) {
    Error error = st.ok() ? plain_error("etcd", ep.text + " answered " + std::to_string(code) + ": " + short_text(body))
                          : st.error();
    if (!st.ok()) error.detail = ep.text + (error.detail.empty() ? "" : ": " + error.detail);
    ++control_ep_;
    bool refused = !st.ok() && st.error().errno_value != ETIMEDOUT;
    if (refused && ++control_failures_ < options_.endpoints.size()) {
      // The next endpoint, now: one dead member should not cost a second of membership.
      ticks_since_member_put_ = kMemberRefreshTicks;
      return timers_.start(tick_timer_, monotonic_ns());
    }
    control_failures_ = 0;
    return mark_unreachable(error);
  }
  control_failures_ = 0;
  if (!reachable_) {
    reachable_ = true;
    etcd_stats_.reachable = true;
    FV_WARN("etcd reachable again through %s: reading the store again, changes accepted", ep.text.c_str());
    unreachable_why_.clear();
    restart_watch_with_resync();
  }
  bool put_member = false;
  if (step == ControlStep::grant) {
    simdjson::dom::element id;
    lease_ = doc["ID"].get(id) == simdjson::SUCCESS ? json_i64(id) : 0;
    put_member = lease_ != 0;
  } else if (step == ControlStep::keepalive) {
    simdjson::dom::element ttl;
    if (doc["result"]["TTL"].get(ttl) != simdjson::SUCCESS || json_i64(ttl) <= 0) {
      FV_WARN("etcd: the membership lease expired; registering again");
      lease_ = 0;
      return send(ControlStep::grant, "/v3/lease/grant",
                  "{\"TTL\":\"" + std::to_string(options_.member_ttl_s) + "\"}", kControlTimeoutMs);
    }
    std::string value = describe_member_ ? describe_member_() : "{}";
    put_member = value != member_value_ || ticks_since_member_put_ >= kMemberRefreshTicks;
  }
  if (put_member) {
    member_value_ = describe_member_ ? describe_member_() : "{}";
    ticks_since_member_put_ = 0;
    std::string key = options_.prefix + "/members/" + options_.member;
    send(ControlStep::member, "/v3/kv/put",
         kv_json(key) + ",\"value\":\"" + base64_encode(member_value_) + "\",\"lease\":\"" + std::to_string(lease_) + "\"}",
         kControlTimeoutMs);
  }
}

void EtcdStore::close() {
  if (closed_) return;
  closed_ = true;
  listener_ = nullptr;  // the node is going: nothing more is delivered to it
  timers_.stop(tick_timer_);
  timers_.stop(watch_retry_);
  watch_conn_.abort();
  if (control_conn_.busy()) control_conn_.abort();  // control_done revokes the lease
  else if (lease_ != 0) {
    control_step_ = ControlStep::revoke;
    control_conn_.request(endpoint(control_ep_), "/v3/lease/revoke", "{\"ID\":\"" + std::to_string(lease_) + "\"}", 500,
                          control_sink_);
  }
}

}  // namespace faasvisor::store
