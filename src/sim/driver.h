// One seed of the simulation (docs/simulation.md): a random workload (invocations arriving,
// abandoned, functions deployed, updated, scaled and deleted) against the real pool::Pool
// with a faulty SimBackend, under virtual time, with invariants checked after every step:
//  - every invocation is answered exactly once (success, error or timeout), never after it
//    was abandoned, never from inside the pool call or instance callback that produced it,
//    and by its deadline;
//  - a successful answer carries what the instance sent (the queued copy is intact);
//  - the memory budget is never exceeded (by the pool's reservations, nor by what the
//    modelled instances still hold), queues stay within their limits, instances within
//    scale.max;
//  - no instance is lost: at the end every launched one has exited, been reaped, been
//    cleaned (or given up on by the pool's documented attempt limit) and had its streams
//    closed; no timer is left behind; the simulated I/O saw no misuse (an operation on a
//    closed stream, a completion armed twice, a double reap, cleanup before reap).
#pragma once

#include <cstdint>
#include <string>

namespace faasvisor::sim {

struct DriverOptions {
  uint32_t actions = 120;  // workload actions per seed
  bool trace_echo = false; // print the trace as it happens (replaying one seed)
};

struct SeedResult {
  bool ok = true;
  std::string failure;   // what broke, with the seed
  std::string trace;     // the last steps before it
  uint64_t steps = 0;
  uint64_t invocations = 0;
  uint64_t instances = 0;
};

SeedResult run_seed(uint64_t seed, const DriverOptions &options);

// The trace of the seed being run, for a crash handler (an assertion in the pool aborts).
std::string current_trace();

}  // namespace faasvisor::sim
