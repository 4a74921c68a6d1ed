#include "stats/histogram.h"

#include <cstdio>

namespace faasvisor::stats {

void Histogram::observe(double seconds) {
  ++count_;
  sum_ += seconds;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets_[i];
      return;
    }
  }
}

void Histogram::append_prometheus(std::string &out, std::string_view name, std::string_view labels) const {
  char buf[64];
  uint64_t cumulative = 0;
  std::string prefix = std::string(name) + "_bucket{" + std::string(labels) + (labels.empty() ? "" : ",");
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets_[i];
    std::snprintf(buf, sizeof buf, "le=\"%g\"} %llu\n", kBounds[i], static_cast<unsigned long long>(cumulative));
    out += prefix;
    out += buf;
  }
  out += prefix + "le=\"+Inf\"} " + std::to_string(count_) + "\n";
  std::snprintf(buf, sizeof buf, "%.9g", sum_);
  out += std::string(name) + "_sum{" + std::string(labels) + "} " + buf + "\n";
  out += std::string(name) + "_count{" + std::string(labels) + "} " + std::to_string(count_) + "\n";
}

}  // namespace faasvisor::stats
