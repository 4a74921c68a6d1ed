// What a function asks of instance networking (docs/network.md), parsed from its deploy's
// annotations. Pure: the deploy parser uses it without the rest of net/.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "model/network_spec.h"
#include "util/result.h"

namespace faasvisor::net {

// faasvisor.network and faasvisor.egress.allow. Errors name the annotation.
Result<NetworkSpec> parse_network_annotations(const std::map<std::string, std::string> &annotations);
// One allow item "A.B.C.D[/N][:PORT]" in canonical form "A.B.C.D/N[:PORT]" (host bits must
// be zero), or why not.
Result<std::string> canonical_allow_item(std::string_view item);

}  // namespace faasvisor::net
