#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "pool/logbook.h"
#include "server/logs.h"
#include "stats/histogram.h"

using namespace faasvisor;

namespace {
struct Recorder final : pool::LogFollower {
  std::vector<std::string> lines;
  bool ended = false;
  pool::LogBook *unfollow_from = nullptr;  // drop itself after the first line
  void log_line(const pool::LogEntry &e) override {
    lines.push_back(e.text);
    if (unfollow_from) unfollow_from->unfollow(*this);
  }
  void log_ended() override { ended = true; }
};
}  // namespace

TEST_CASE("the log book keeps the newest lines within its line and byte bounds") {
  pool::LogBook book;
  for (size_t i = 0; i < pool::LogBook::kMaxLines + 10; ++i) book.append("fn-1", std::to_string(i), false, i);
  CHECK(book.entries().size() == pool::LogBook::kMaxLines);
  CHECK(book.entries().front().text == "10");
  CHECK(book.dropped() == 10);
  std::string big(pool::LogBook::kMaxLineBytes - 1, 'x');
  for (int i = 0; i < 400; ++i) book.append("fn-1", big, false, 0);
  size_t bytes = 0;
  for (const auto &e : book.entries()) bytes += e.text.size() + e.instance.size();
  CHECK(bytes <= pool::LogBook::kMaxBytes);
}

TEST_CASE("over-long and cut lines are marked") {
  pool::LogBook book;
  book.append("fn-1", std::string(pool::LogBook::kMaxLineBytes + 5, 'y'), false, 0);
  book.append("fn-1", "short", true, 0);
  CHECK(book.entries()[0].text.size() == pool::LogBook::kMaxLineBytes + pool::LogBook::kCutMark.size());
  CHECK(book.entries()[1].text == "short [line cut]");
}

TEST_CASE("followers get new lines, may leave from inside the callback, and hear the end") {
  Recorder a, b;
  {
    pool::LogBook book;
    book.append("fn-1", "before", false, 0);
    book.follow(a);
    book.follow(b);
    b.unfollow_from = &book;
    book.append("fn-1", "one", false, 0);
    book.append("fn-1", "two", false, 0);
    CHECK(a.lines == std::vector<std::string>{"one", "two"});
    CHECK(b.lines == std::vector<std::string>{"one"});
  }
  CHECK(a.ended);
  CHECK(!b.ended);
}

TEST_CASE("log lines are NDJSON with an RFC 3339 nanosecond timestamp") {
  pool::LogEntry e{1'700'000'000'123'456'789ull, "echo-3", "he said \"hi\""};
  std::string out;
  append_log_json(out, "echo", "openfaas-fn", e);
  CHECK(out ==
        "{\"name\":\"echo\",\"namespace\":\"openfaas-fn\",\"instance\":\"echo-3\","
        "\"timestamp\":\"2023-11-14T22:13:20.123456789Z\",\"text\":\"he said \\\"hi\\\"\"}\n");
}

TEST_CASE("query parameters are found and percent-decoded") {
  std::string v;
  CHECK(query_param("name=echo&tail=5", "tail", &v));
  CHECK(v == "5");
  CHECK(query_param("a=1&name=my%2Dfn+x", "name", &v));
  CHECK(v == "my-fn x");
  CHECK(query_param("follow", "follow", &v));
  CHECK(v.empty());
  CHECK(!query_param("names=1", "name", &v));
  CHECK(query_param("x=%zz", "x", &v));
  CHECK(v == "%zz");
}

TEST_CASE("?tail= takes a whole number; a sign, junk or an overflowing value is refused") {
  size_t tail = 7;
  REQUIRE(parse_log_tail("0", &tail));
  CHECK(tail == 0);
  REQUIRE(parse_log_tail("25", &tail));
  CHECK(tail == 25);
  REQUIRE(parse_log_tail("1000000000", &tail));
  CHECK(tail == 1'000'000'000);
  for (const char *bad : {"-1", "+1", " 1", "1 ", "1x", "", "1000000001", "18446744073709551616",
                          "99999999999999999999999"})
    CHECK_MESSAGE(!parse_log_tail(bad, &tail), bad);
}

TEST_CASE("RFC 3339 times parse with fractions and offsets") {
  uint64_t ns = 0;
  REQUIRE(parse_rfc3339_ns("2023-11-14T22:13:20Z", &ns));
  CHECK(ns == 1'700'000'000'000'000'000ull);
  REQUIRE(parse_rfc3339_ns("2023-11-14T22:13:20.5Z", &ns));
  CHECK(ns == 1'700'000'000'500'000'000ull);
  REQUIRE(parse_rfc3339_ns("2023-11-14T23:13:20+01:00", &ns));
  CHECK(ns == 1'700'000'000'000'000'000ull);
  CHECK(!parse_rfc3339_ns("yesterday", &ns));
  CHECK(!parse_rfc3339_ns("2023-11-14T22:13:20", &ns));
}

TEST_CASE("histograms expose cumulative Prometheus buckets") {
  stats::Histogram h;
  h.observe(0.0004);
  h.observe(0.003);
  h.observe(100);
  std::string out;
  h.append_prometheus(out, "x_seconds", "f=\"a\"");
  CHECK(out.find("x_seconds_bucket{f=\"a\",le=\"0.0005\"} 1\n") != std::string::npos);
  CHECK(out.find("x_seconds_bucket{f=\"a\",le=\"0.005\"} 2\n") != std::string::npos);
  CHECK(out.find("x_seconds_bucket{f=\"a\",le=\"30\"} 2\n") != std::string::npos);
  CHECK(out.find("x_seconds_bucket{f=\"a\",le=\"+Inf\"} 3\n") != std::string::npos);
  CHECK(out.find("x_seconds_count{f=\"a\"} 3\n") != std::string::npos);
}
