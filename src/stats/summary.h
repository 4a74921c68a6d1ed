// A latency series: exact mean/stddev over every sample (Welford), and percentiles over the
// most recent kRetained samples (bounded memory; the study's statistics endpoint reported
// the same figures).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace faasvisor::stats {

struct SummaryView {
  uint64_t count = 0;
  double mean = 0, stddev = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};

class Summary {
 public:
  static constexpr size_t kRetained = 16384;

  void add(double value);
  void reset();
  uint64_t count() const { return count_; }
  SummaryView view() const;  // sorts a copy of the retained samples: off the hot path

 private:
  uint64_t count_ = 0;
  double mean_ = 0, m2_ = 0, max_ = 0;
  std::vector<double> ring_;  // the last kRetained samples
  size_t next_ = 0;
};

// Appends {"count":..,"mean":..,...} with values in the unit they were recorded in.
void append_json(std::string &out, const SummaryView &v);

}  // namespace faasvisor::stats
