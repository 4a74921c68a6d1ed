// A cumulative histogram with fixed bucket bounds, as Prometheus exposes them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace faasvisor::stats {

class Histogram {
 public:
  // Upper bounds in seconds (the OpenFaaS gateway's gateway_functions_seconds uses the
  // Prometheus defaults; we add finer buckets below 5 ms, where warm invocations land).
  static constexpr std::array<double, 15> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,    0.25,  0.5,    1,     2.5,   5,     10, 30};
  void observe(double seconds);
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Appends NAME_bucket{LABELS,le="..."} lines, NAME_sum and NAME_count.
  void append_prometheus(std::string &out, std::string_view name, std::string_view labels) const;

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};  // non-cumulative here; summed on output
  uint64_t count_ = 0;
  double sum_ = 0;
};

}  // namespace faasvisor::stats
