// Instance networking's pure parts: the deploy annotations and the OCI config with a
// prepared namespace (the namespaces themselves are tested live: test_network.py).
#include <doctest/doctest.h>
#include <simdjson.h>

#include <map>
#include <string>
#include <string_view>

#include "backend/oci.h"
#include "net/network.h"
#include "proc/spawn.h"

using faasvisor::net::canonical_allow_item;
using faasvisor::net::parse_network_annotations;

namespace {
std::string error_of(const std::map<std::string, std::string> &annotations) {
  auto parsed = parse_network_annotations(annotations);
  REQUIRE(!parsed);
  return parsed.error().message();
}
}  // namespace

TEST_CASE("network annotations: none by default, egress on request") {
  auto none = parse_network_annotations({});
  REQUIRE(none);
  CHECK(!none->egress);
  auto explicit_none = parse_network_annotations({{"faasvisor.network", "none"}});
  REQUIRE(explicit_none);
  CHECK(!explicit_none->egress);
  auto egress = parse_network_annotations({{"faasvisor.network", "egress"}});
  REQUIRE(egress);
  CHECK(egress->egress);
  CHECK(egress->allow.empty());
  CHECK(error_of({{"faasvisor.network", "host"}}).find("'annotations.faasvisor.network'") != std::string::npos);
}

TEST_CASE("network annotations: the allow list comes out canonical") {
  auto spec = parse_network_annotations(
      {{"faasvisor.network", "egress"}, {"faasvisor.egress.allow", " 10.0.0.0/8:443 ,192.0.2.7, 0.0.0.0/0:53"}});
  REQUIRE(spec);
  CHECK(spec->allow == "10.0.0.0/8:443,192.0.2.7/32,0.0.0.0/0:53");
}

TEST_CASE("network annotations: rate and connection limits, part of the policy key") {
  auto spec = parse_network_annotations({{"faasvisor.network", "egress"},
                                         {"faasvisor.egress.rate", "1Mi"},
                                         {"faasvisor.egress.connections", "8"}});
  REQUIRE(spec);
  CHECK(spec->rate_bytes == 1u << 20);
  CHECK(spec->max_connections == 8);
  auto plain = parse_network_annotations({{"faasvisor.network", "egress"}});
  REQUIRE(plain);
  CHECK(spec->key() != plain->key());
  CHECK(error_of({{"faasvisor.network", "egress"}, {"faasvisor.egress.rate", "100"}}).find("faasvisor.egress.rate") !=
        std::string::npos);
  CHECK(error_of({{"faasvisor.network", "egress"}, {"faasvisor.egress.connections", "x"}})
            .find("faasvisor.egress.connections") != std::string::npos);
  CHECK(error_of({{"faasvisor.egress.rate", "1Mi"}}).find("needs faasvisor.network=egress") != std::string::npos);
}

TEST_CASE("network annotations: bad allow lists are refused, naming the item") {
  CHECK(error_of({{"faasvisor.egress.allow", "10.0.0.0/8"}}).find("needs faasvisor.network=egress") != std::string::npos);
  for (const char *bad : {"10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/8:0", "10.0.0.0/8:65536", "10.0.0.0/8:",
                          "example.com", "::1", "10.0.0.0/8:80:90", ","}) {
    CAPTURE(bad);
    CHECK(error_of({{"faasvisor.network", "egress"}, {"faasvisor.egress.allow", bad}})
              .find("annotations.faasvisor.egress.allow") != std::string::npos);
  }
  CHECK(!canonical_allow_item("1.2.3.4; drop"));
  CHECK(*canonical_allow_item("1.2.3.4:8080") == "1.2.3.4/32:8080");
}

TEST_CASE("oci config: an egress instance joins the prepared namespace and gets resolv.conf") {
  faasvisor::FunctionSpec spec;
  spec.name = "fetch";
  spec.argv = {"/fetch"};
  faasvisor::backend::OciConfigInput input;
  input.rootfs = "/srv/fetch/rootfs";
  input.hostname = "fetch";
  input.netns_path = "/proc/42/fd/7";
  input.resolv_conf = "/run/faasvisor/net/42/resolv.conf";
  std::string json = faasvisor::backend::make_oci_config(spec, "fetch-1", input);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  bool joined = false, bound = false;
  for (simdjson::dom::element ns : doc["linux"]["namespaces"].get_array()) {
    if (std::string_view(ns["type"].get_string()) != "network") continue;
    joined = std::string_view(ns["path"].get_string()) == "/proc/42/fd/7";
  }
  for (simdjson::dom::element m : doc["mounts"].get_array()) {
    if (std::string_view(m["destination"].get_string()) != "/etc/resolv.conf") continue;
    bound = std::string_view(m["source"].get_string()) == input.resolv_conf;
  }
  CHECK(joined);
  CHECK(bound);
}

TEST_CASE("a GO message ends with the namespace to join and the resolv.conf to bind") {
  faasvisor::proc::GoSpec go;
  go.directory = "/d";
  go.argv = {"x"};
  go.netns_name = "i7";
  go.resolv_conf = "/r";
  std::string message = faasvisor::proc::encode_go(go);
  CHECK(message.substr(message.size() - 14) == std::string("\2\0\0\0i7\2\0\0\0/r", 12).insert(0, "\0\0", 2));
}
