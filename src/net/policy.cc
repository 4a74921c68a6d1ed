#include "net/policy.h"

#include <arpa/inet.h>

#include "model/units.h"
#include "util/number.h"

namespace faasvisor::net {
namespace {
constexpr size_t kMaxAllowItems = 64;

Error annotation_error(const char *key, std::string detail) {
  return plain_error("invalid deployment", std::string("field 'annotations.") + key + "': " + detail);
}
}  // namespace

Result<std::string> canonical_allow_item(std::string_view item) {
  std::string_view address = item, port;
  if (size_t colon = item.find(':'); colon != std::string_view::npos) {
    address = item.substr(0, colon);
    port = item.substr(colon + 1);
  }
  uint32_t prefix = 32;
  if (size_t slash = address.find('/'); slash != std::string_view::npos) {
    auto n = parse_decimal(address.substr(slash + 1));
    if (!n || *n > 32) return plain_error("allow", "'" + std::string(item) + "': the prefix length must be 0-32");
    prefix = *n;
    address = address.substr(0, slash);
  }
  in_addr addr{};
  std::string text(address);
  if (inet_pton(AF_INET, text.c_str(), &addr) != 1)
    return plain_error("allow", "'" + std::string(item) + "': not an IPv4 address, CIDR or CIDR:PORT");
  uint32_t host_order = ntohl(addr.s_addr);
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  if ((host_order & ~mask) != 0)
    return plain_error("allow", "'" + std::string(item) + "': host bits set past /" + std::to_string(prefix));
  std::string out = text + "/" + std::to_string(prefix);
  if (!port.empty() || item.find(':') != std::string_view::npos) {
    auto p = parse_decimal(port);
    if (!p || *p == 0 || *p > 65535) return plain_error("allow", "'" + std::string(item) + "': the port must be 1-65535");
    out += ":" + std::to_string(*p);
  }
  return out;
}

Result<NetworkSpec> parse_network_annotations(const std::map<std::string, std::string> &annotations) {
  NetworkSpec spec;
  if (auto it = annotations.find("faasvisor.network"); it != annotations.end()) {
    if (it->second == "egress") spec.egress = true;
    else if (it->second != "none")
      return annotation_error("faasvisor.network", "must be \"none\" or \"egress\", not '" + it->second + "'");
  }
  if (auto rate = annotations.find("faasvisor.egress.rate"); rate != annotations.end()) {
    if (!spec.egress) return annotation_error("faasvisor.egress.rate", "needs faasvisor.network=egress");
    auto bytes = parse_memory_bytes(rate->second);
    if (!bytes || *bytes < 1024 || *bytes > (10ull << 30))
      return annotation_error("faasvisor.egress.rate", "must be bytes per second from 1Ki to 10Gi, such as \"1Mi\"");
    spec.rate_bytes = *bytes;
  }
  if (auto conns = annotations.find("faasvisor.egress.connections"); conns != annotations.end()) {
    if (!spec.egress) return annotation_error("faasvisor.egress.connections", "needs faasvisor.network=egress");
    auto n = parse_decimal(conns->second);
    if (!n || *n == 0 || *n > 65535)
      return annotation_error("faasvisor.egress.connections", "must be a count from 1 to 65535");
    spec.max_connections = static_cast<uint32_t>(*n);
  }
  auto allow = annotations.find("faasvisor.egress.allow");
  if (allow == annotations.end()) return spec;
  if (!spec.egress) return annotation_error("faasvisor.egress.allow", "needs faasvisor.network=egress");
  std::string_view rest = allow->second;
  size_t count = 0;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) continue;
    if (++count > kMaxAllowItems)
      return annotation_error("faasvisor.egress.allow", "at most " + std::to_string(kMaxAllowItems) + " items");
    auto canonical = canonical_allow_item(item);
    if (!canonical) return annotation_error("faasvisor.egress.allow", canonical.error().detail);
    spec.allow += (spec.allow.empty() ? "" : ",") + *canonical;
  }
  if (spec.allow.empty())
    return annotation_error("faasvisor.egress.allow", "empty (leave it out to allow any destination)");
  return spec;
}

}  // namespace faasvisor::net
