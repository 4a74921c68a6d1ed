#include <doctest/doctest.h>

#include <string>

#include "stats/summary.h"

using faasvisor::stats::Summary;

TEST_CASE("an empty summary reports zeros") {
  Summary s;
  auto v = s.view();
  CHECK(v.count == 0);
  CHECK(v.mean == 0);
  CHECK(v.p99 == 0);
}

TEST_CASE("summary mean, stddev, max and nearest-rank percentiles over 1..100") {
  Summary s;
  for (int i = 100; i >= 1; --i) s.add(i);
  auto v = s.view();
  CHECK(v.count == 100);
  CHECK(v.mean == doctest::Approx(50.5));
  CHECK(v.stddev == doctest::Approx(29.0115).epsilon(0.0001));  // sample stddev
  CHECK(v.p50 == 50);
  CHECK(v.p95 == 95);
  CHECK(v.p99 == 99);
  CHECK(v.max == 100);
}

TEST_CASE("summary keeps exact mean over all samples but percentiles over the retained window") {
  Summary s;
  for (size_t i = 0; i < Summary::kRetained; ++i) s.add(1000);
  for (size_t i = 0; i < Summary::kRetained; ++i) s.add(1);
  auto v = s.view();
  CHECK(v.count == 2 * Summary::kRetained);
  CHECK(v.mean == doctest::Approx(500.5));
  CHECK(v.p99 == 1);  // the old samples have rolled out of the window
  CHECK(v.max == 1000);
}

TEST_CASE("summary reset forgets everything") {
  Summary s;
  s.add(5);
  s.reset();
  CHECK(s.view().count == 0);
  s.add(7);
  CHECK(s.view().p50 == 7);
}

TEST_CASE("summary JSON has every field") {
  Summary s;
  s.add(2);
  std::string out;
  faasvisor::stats::append_json(out, s.view());
  for (const char *key : {"\"count\":1", "\"mean\":2.0000", "\"stddev\":0.0000", "\"p50\":2.0000",
                          "\"p95\":", "\"p99\":", "\"max\":2.0000"})
    CHECK(out.find(key) != std::string::npos);
}
