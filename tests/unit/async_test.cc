// Async invocations' pure parts (journal records, callback URLs, response status lines) and
// the journal itself on a real ring and a real directory: what was made durable comes back
// at the next open, done calls do not, damage at a segment's end is found and stops there,
// and finished segments are removed.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "async/callback.h"
#include "async/journal.h"
#include "async/record.h"
#include "async/url.h"
#include "io/ring.h"
#include "util/clock.h"
#include "util/log.h"

using namespace faasvisor;
using namespace faasvisor::async;

namespace {

CallRecord sample_call(uint64_t seq, std::string body = "hello") {
  CallRecord c;
  c.seq = seq;
  c.id = "call-" + std::to_string(seq);
  c.function = "echo";
  c.path = "/sub/path";
  c.query = "a=1&b=2";
  c.callback_url = "http://127.0.0.1:9/cb";
  c.headers = {{"Content-Type", "text/plain"}, {"X-Call-Id", c.id}};
  c.body = std::move(body);
  c.accepted_unix_ns = 1'700'000'000'000'000'000ull + seq;
  return c;
}

void check_same(const CallRecord &a, const CallRecord &b) {
  CHECK(a.seq == b.seq);
  CHECK(a.id == b.id);
  CHECK(a.function == b.function);
  CHECK(a.path == b.path);
  CHECK(a.query == b.query);
  CHECK(a.callback_url == b.callback_url);
  CHECK(a.body == b.body);
  CHECK(a.accepted_unix_ns == b.accepted_unix_ns);
  REQUIRE(a.headers.size() == b.headers.size());
  for (size_t i = 0; i < a.headers.size(); ++i) {
    CHECK(a.headers[i].name == b.headers[i].name);
    CHECK(a.headers[i].value == b.headers[i].value);
  }
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/fv-journal-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

struct Waiter final : JournalWaiter {
  bool heard = false;
  bool ok = false;
  uint64_t segment = 0;
  void journal_done(Status st, uint64_t seg) override {
    heard = true;
    ok = st.ok();
    segment = seg;
  }
};

// Runs the ring until `done` holds or 5 s pass.
template <typename Pred>
bool run_until(io::Ring &ring, Pred done) {
  uint64_t deadline = monotonic_ns() + 5'000'000'000ull;
  while (!done()) {
    if (monotonic_ns() > deadline) return false;
    ring.run_once();
  }
  return true;
}

std::vector<std::string> segment_files(const std::string &dir) {
  std::vector<std::string> names;
  for (const auto &e : std::filesystem::directory_iterator(dir))
    if (parse_segment_name(e.path().filename().string()) != 0) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("journal records: an accept and a done record decode to what was encoded") {
  std::string bytes;
  CallRecord c = sample_call(7, std::string("\0binary\r\n", 9));
  encode_accept(bytes, c);
  encode_done(bytes, 7);
  encode_accept(bytes, sample_call(8, ""));
  DecodedSegment d = decode_segment(bytes, 1u << 20);
  CHECK(d.damage.empty());
  CHECK(d.good_bytes == bytes.size());
  REQUIRE(d.accepted.size() == 2);
  check_same(d.accepted[0], c);
  check_same(d.accepted[1], sample_call(8, ""));
  REQUIRE(d.done.size() == 1);
  CHECK(d.done[0] == 7);
}

TEST_CASE("journal records: decoding stops at a torn, corrupt or oversized record and keeps what came before") {
  std::string good;
  encode_accept(good, sample_call(1));
  std::string second;
  encode_accept(second, sample_call(2));

  SUBCASE("a record cut short (a crash during its write)") {
    for (size_t cut = 1; cut < second.size(); cut += 7) {
      DecodedSegment d = decode_segment(good + second.substr(0, cut), 1u << 20);
      CHECK(d.accepted.size() == 1);
      CHECK(d.good_bytes == good.size());
      CHECK(!d.damage.empty());
    }
  }
  SUBCASE("a flipped byte in the payload fails the checksum") {
    std::string bad = second;
    bad[kRecordHeaderBytes + 10] ^= 0x40;
    DecodedSegment d = decode_segment(good + bad + good, 1u << 20);
    CHECK(d.accepted.size() == 1);
    CHECK(d.damage.find("checksum") != std::string::npos);
  }
  SUBCASE("a bad header") {
    std::string bad = second;
    bad[1] = 'X';
    DecodedSegment d = decode_segment(good + bad, 1u << 20);
    CHECK(d.accepted.size() == 1);
    CHECK(d.damage.find("header") != std::string::npos);
  }
  SUBCASE("a length over the limit is damage, not an allocation") {
    DecodedSegment d = decode_segment(good + second, static_cast<uint32_t>(second.size() - 20));
    CHECK(d.accepted.empty());
    CHECK(d.damage.find("over the limit") != std::string::npos);
  }
  SUBCASE("zeros after the last record (a preallocated or extended file)") {
    DecodedSegment d = decode_segment(good + std::string(64, '\0'), 1u << 20);
    CHECK(d.accepted.size() == 1);
    CHECK(!d.damage.empty());
  }
}

TEST_CASE("segment names sort by number and nothing else parses as one") {
  CHECK(segment_name(42) == "seg-0000000000000042.log");
  CHECK(parse_segment_name(segment_name(42)) == 42);
  CHECK(parse_segment_name("seg-00000000000000x2.log") == 0);
  CHECK(parse_segment_name(".seg-0000000000000042.log") == 0);
  CHECK(parse_segment_name("seg-0000000000000042.tmp") == 0);
}

TEST_CASE("callback URLs: http with an IP address or localhost is taken apart") {
  auto u = parse_callback_url("http://127.0.0.1:8081/cb/done?x=1&y=2#frag");
  REQUIRE(u.ok());
  auto *v4 = reinterpret_cast<sockaddr_in *>(&u->addr);
  CHECK(v4->sin_family == AF_INET);
  CHECK(ntohs(v4->sin_port) == 8081);
  CHECK(u->host_header == "127.0.0.1:8081");
  CHECK(u->target == "/cb/done?x=1&y=2");

  auto plain = parse_callback_url("HTTP://localhost");
  REQUIRE(plain.ok());
  CHECK(ntohs(reinterpret_cast<sockaddr_in *>(&plain->addr)->sin_port) == 80);
  CHECK(plain->target == "/");
  auto query_only = parse_callback_url("http://10.0.0.1?a=b");
  REQUIRE(query_only.ok());
  CHECK(query_only->target == "/?a=b");

  auto v6 = parse_callback_url("http://[::1]:9000/x");
  REQUIRE(v6.ok());
  CHECK(reinterpret_cast<sockaddr_in6 *>(&v6->addr)->sin6_family == AF_INET6);
  CHECK(ntohs(reinterpret_cast<sockaddr_in6 *>(&v6->addr)->sin6_port) == 9000);
  CHECK(v6->host_header == "[::1]:9000");
}

TEST_CASE("callback URLs: what the node cannot use is refused with a message that says why") {
  struct Case {
    const char *url;
    const char *says;
  } cases[] = {
      {"https://127.0.0.1/cb", "https is not supported"},
      {"ftp://127.0.0.1/", "must be an http:// URL"},
      {"127.0.0.1:80/cb", "must be an http:// URL"},
      {"http://example.com/cb", "does not resolve host names"},
      {"http://user:pw@127.0.0.1/", "user info"},
      {"http:///cb", "has no host"},
      {"http://127.0.0.1:0/", "out of range"},
      {"http://127.0.0.1:65536/", "out of range"},
      {"http://127.0.0.1:8a/", "bad port"},
      {"http://127.0.0.1:/", "bad port"},
      {"http://127.0.0.1/a b", "space or control"},
      {"http://127.0.0.1/\x01", "space or control"},
      {"http://[::1/", "unclosed"},
      {"http://[zz::1]/", "bad IPv6"},
      {"http://999.1.1.1/", "not an IP address"},
  };
  for (const Case &c : cases) {
    auto u = parse_callback_url(c.url);
    CAPTURE(c.url);
    REQUIRE(!u.ok());
    CHECK(u.error().message().find(c.says) != std::string::npos);
  }
  std::string long_url = "http://127.0.0.1/" + std::string(kMaxCallbackUrlBytes, 'a');
  auto u = parse_callback_url(long_url);
  REQUIRE(!u.ok());
  CHECK(u.error().message().find("longer than") != std::string::npos);
}

TEST_CASE("response status lines: the code of a well-formed line, 0 for anything else") {
  CHECK(parse_status_line("HTTP/1.1 204 No Content\r\n\r\n") == 204);
  CHECK(parse_status_line("HTTP/1.0 503\r\n") == 503);
  CHECK(parse_status_line("HTTP/1.1 200 OK") == 0);  // the line is not complete yet
  CHECK(parse_status_line("HTTP/2 200\r\n") == 0);
  CHECK(parse_status_line("HTTP/1.1 2x0 OK\r\n") == 0);
  CHECK(parse_status_line("HTTP/1.1 2000 OK\r\n") == 0);
  CHECK(parse_status_line("garbage\r\n") == 0);
}

TEST_CASE("the journal: accepted calls come back at the next open until they are marked done") {
  log::set_level(log::Level::error);
  TempDir dir;
  std::unique_ptr<io::Ring> ring(*io::Ring::create(64));
  JournalOptions options;
  options.dir = dir.path + "/async";
  std::vector<uint64_t> seqs;
  {
    Replay replay;
    auto j = Journal::open(*ring, options, &replay);
    REQUIRE(j.ok());
    CHECK(replay.pending.empty());
    CHECK(((std::filesystem::status(options.dir).permissions() & std::filesystem::perms::all) ==
           std::filesystem::perms::owner_all));
    // Many appends before the loop runs: they share batches (group commit).
    std::vector<Waiter> waiters(50);
    for (Waiter &w : waiters) {
      CallRecord c = sample_call((*j)->next_seq());
      seqs.push_back(c.seq);
      (*j)->append_accept(c, w);
      CHECK(!w.heard);  // never from inside append
    }
    REQUIRE(run_until(*ring, [&] { return waiters.back().heard && (*j)->idle(); }));
    for (Waiter &w : waiters) CHECK(w.ok);
    CHECK((*j)->stats().records == 50);
    CHECK((*j)->stats().batches < 50);
    // Mark the first ten done; the last done record's fsync is not waited for by anyone.
    for (int i = 0; i < 10; ++i) (*j)->append_done(seqs[i], waiters[i].segment);
    REQUIRE(run_until(*ring, [&] { return (*j)->idle(); }));
  }
  Replay replay;
  auto j = Journal::open(*ring, options, &replay);
  REQUIRE(j.ok());
  CHECK(replay.damage.empty());
  REQUIRE(replay.pending.size() == 40);
  for (size_t i = 0; i < 40; ++i) check_same(replay.pending[i].call, sample_call(seqs[10 + i]));
  CHECK((*j)->next_seq() > seqs.back());
  // Finishing them all lets the old segment go.
  for (const Replay::Pending &p : replay.pending) (*j)->append_done(p.call.seq, p.segment);
  REQUIRE(run_until(*ring, [&] { return (*j)->idle(); }));
  CHECK(segment_files(options.dir).size() == 1);  // only the current one
  Replay after;
  REQUIRE(Journal::open(*ring, options, &after).ok());
  CHECK(after.pending.empty());
}

TEST_CASE("the journal: a half-written record at a segment's end is reported and what precedes it stands") {
  log::set_level(log::Level::error);
  TempDir dir;
  std::unique_ptr<io::Ring> ring(*io::Ring::create(64));
  JournalOptions options;
  options.dir = dir.path + "/async";
  {
    Replay replay;
    auto j = Journal::open(*ring, options, &replay);
    REQUIRE(j.ok());
    Waiter a, b;
    (*j)->append_accept(sample_call(1), a);
    (*j)->append_accept(sample_call(2), b);
    REQUIRE(run_until(*ring, [&] { return b.heard; }));
  }
  // What a crash in the middle of the next write leaves: part of a record.
  std::string seg = options.dir + "/" + segment_files(options.dir).back();
  std::string partial;
  encode_accept(partial, sample_call(3));
  int fd = ::open(seg.c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, partial.data(), partial.size() / 2) > 0);
  ::close(fd);
  Replay replay;
  auto j = Journal::open(*ring, options, &replay);
  REQUIRE(j.ok());
  REQUIRE(replay.pending.size() == 2);
  CHECK(replay.pending[1].call.seq == 2);
  REQUIRE(replay.damage.size() == 1);
  CHECK(replay.damage[0].find("truncated") != std::string::npos);
  // New appends go to a new segment, not after the damage.
  Waiter c;
  (*j)->append_accept(sample_call((*j)->next_seq()), c);
  REQUIRE(run_until(*ring, [&] { return c.heard; }));
  CHECK(c.segment != replay.pending[1].segment);
}

TEST_CASE("the journal: full segments rotate, and finished ones are removed oldest first") {
  log::set_level(log::Level::error);
  TempDir dir;
  std::unique_ptr<io::Ring> ring(*io::Ring::create(64));
  JournalOptions options;
  options.dir = dir.path + "/async";
  options.segment_bytes = 4096;
  Replay replay;
  auto j = Journal::open(*ring, options, &replay);
  REQUIRE(j.ok());
  std::vector<std::unique_ptr<Waiter>> waiters;
  std::vector<uint64_t> seqs;
  // Appended one batch at a time, so the segment fills and rotates between batches.
  for (int i = 0; i < 40; ++i) {
    waiters.push_back(std::make_unique<Waiter>());
    CallRecord c = sample_call((*j)->next_seq(), std::string(500, 'x'));
    seqs.push_back(c.seq);
    (*j)->append_accept(c, *waiters.back());
    REQUIRE(run_until(*ring, [&] { return waiters.back()->heard; }));
  }
  size_t segments = segment_files(options.dir).size();
  CHECK(segments >= 4);
  CHECK((*j)->segment_count() == segments);
  // Finish every call but one in the first segment: nothing can go yet (the oldest pins).
  uint64_t first = waiters[0]->segment;
  for (size_t i = 1; i < seqs.size(); ++i) (*j)->append_done(seqs[i], waiters[i]->segment);
  REQUIRE(run_until(*ring, [&] { return (*j)->idle(); }));
  CHECK(segment_files(options.dir).front() == segment_name(first));
  size_t pinned = segment_files(options.dir).size();
  CHECK(pinned >= segments - 1);
  // The last one done: every full segment goes.
  (*j)->append_done(seqs[0], first);
  // A later append kicks the journal on (removals run between batches).
  Waiter last;
  (*j)->append_accept(sample_call((*j)->next_seq()), last);
  REQUIRE(run_until(*ring, [&] { return last.heard && (*j)->idle(); }));
  CHECK(segment_files(options.dir).size() <= 2);
  CHECK((*j)->stats().segments_removed >= segments - 2);
  Replay after;
  j->reset();
  REQUIRE(Journal::open(*ring, options, &after).ok());
  REQUIRE(after.pending.size() == 1);
  CHECK(after.pending[0].call.seq == seqs.back() + 1);
}

TEST_CASE("the journal without a directory acknowledges on the next loop turn and keeps nothing") {
  std::unique_ptr<io::Ring> ring(*io::Ring::create(64));
  Replay replay;
  auto j = Journal::open(*ring, JournalOptions{}, &replay);
  REQUIRE(j.ok());
  CHECK(!(*j)->durable());
  Waiter w;
  (*j)->append_accept(sample_call(1), w);
  CHECK(!w.heard);
  REQUIRE(run_until(*ring, [&] { return w.heard; }));
  CHECK(w.ok);
  (*j)->append_done(1, w.segment);
  CHECK((*j)->idle());
}
