#include "stats/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace faasvisor::stats {

void Summary::add(double value) {
  ++count_;
  double delta = value - mean_;
  mean_ += delta / static_cast<double>(count_);
  m2_ += delta * (value - mean_);
  if (count_ == 1 || value > max_) max_ = value;
  if (ring_.size() < kRetained) {
    ring_.push_back(value);
  } else {
    ring_[next_] = value;
    next_ = (next_ + 1) % kRetained;
  }
}

void Summary::reset() {
  count_ = 0;
  mean_ = m2_ = max_ = 0;
  ring_.clear();
  ring_.shrink_to_fit();
  next_ = 0;
}

namespace {
// Nearest-rank percentile over sorted samples.
double percentile(const std::vector<double> &sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}
}  // namespace

SummaryView Summary::view() const {
  SummaryView v;
  v.count = count_;
  if (count_ == 0) return v;
  v.mean = mean_;
  v.stddev = count_ > 1 ? std::sqrt(m2_ / static_cast<double>(count_ - 1)) : 0.0;
  v.max = max_;
  std::vector<double> sorted = ring_;
  std::sort(sorted.begin(), sorted.end());
  v.p50 = percentile(sorted, 50);
  v.p95 = percentile(sorted, 95);
  v.p99 = percentile(sorted, 99);
  return v;
}

void append_json(std::string &out, const SummaryView &v) {
  char buf[320];
  int n = std::snprintf(buf, sizeof buf,
                        "{\"count\":%llu,\"mean\":%.4f,\"stddev\":%.4f,\"p50\":%.4f,"
                        "\"p95\":%.4f,\"p99\":%.4f,\"max\":%.4f}",
                        static_cast<unsigned long long>(v.count), v.mean, v.stddev, v.p50, v.p95,
                        v.p99, v.max);
  out.append(buf, static_cast<size_t>(n));
}

}  // namespace faasvisor::stats
