// What a function asks of instance networking (docs/network.md); parsed from its deploy's
// annotations by net/policy.h, carried by FunctionSpec (model/function_spec.h).
#pragma once

#include <cstdint>
#include <string>

namespace faasvisor::net {

// What a function asks for (parsed at deploy from its annotations).
struct NetworkSpec {
  bool egress = false;
  // faasvisor.egress.allow in canonical form ("CIDR[:PORT],...", each CIDR with its
  // prefix), empty: any destination the node's rules let through.
  std::string allow;
  // faasvisor.egress.rate: bytes per second each way per instance (tc tbf on both ends of
  // its veth); 0: no cap.
  uint64_t rate_bytes = 0;
  // faasvisor.egress.connections: connections an instance may have open at once (nft ct
  // count); 0: no limit.
  uint32_t max_connections = 0;
  // Set by the microvm backend at deploy: the namespace holds a TAP device (tap0) bridged
  // to its veth, and the guest, not the namespace, owns the address.
  bool tap = false;
  // Instances whose specs have the same key share prepared namespaces (one nft chain).
  std::string key() const {
    return allow + "|" + std::to_string(rate_bytes) + "|" + std::to_string(max_connections) + (tap ? "|tap" : "");
  }
};

}  // namespace faasvisor::net
