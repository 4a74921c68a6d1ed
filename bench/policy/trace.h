// An invocation trace: CSV with the header `function,arrival_ms,duration_ms`, one invocation
// a line (arrival_ms from the start of the trace, duration_ms the execution time once on an
// instance). Function names are interned to dense ids; invocations are sorted by arrival.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace faasvisor::bench {

struct TraceInvocation {
  uint32_t function;  // index into Trace::functions
  uint64_t arrival_ms;
  uint64_t duration_ms;
};

struct Trace {
  std::vector<std::string> functions;
  std::vector<TraceInvocation> invocations;  // by arrival; equal arrivals in file order
  uint64_t end_ms = 0;                       // the latest arrival + duration
};

// Reads PATH; on error returns false and says why in *error (with the line number).
bool load_trace(const std::string &path, Trace *trace, std::string *error);

}  // namespace faasvisor::bench
