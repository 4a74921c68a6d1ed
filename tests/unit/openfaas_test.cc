// OpenFaaS compatibility pieces (api/openfaas.h) and the deploy fields they cover, parsed from
// the bodies faas-cli 0.16 sends (docs/openfaas.md).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "api/deploy.h"
#include "api/openfaas.h"
#include "api/router.h"

using namespace faasvisor;
using api::RouteKind;

namespace {

std::string deploy_error(const std::string &json) {
  auto r = parse_deploy(json, DeployLimits{});
  REQUIRE(!r.ok());
  return r.error().message();
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the namespace routes and NAME.NAMESPACE invocations route") {
  CHECK(api::route("GET", "/system/namespaces").kind == RouteKind::namespaces);
  CHECK(api::route("POST", "/system/namespaces").kind == RouteKind::method_not_allowed);
  auto n = api::route("GET", "/system/namespace/openfaas-fn");
  CHECK(n.kind == RouteKind::namespace_info);
  CHECK(n.name == "openfaas-fn");
  CHECK(api::route("GET", "/system/namespace/").kind == RouteKind::not_found);
  CHECK(api::route("DELETE", "/system/namespace/x").kind == RouteKind::method_not_allowed);
  CHECK(api::route("POST", "/function/echo.openfaas-fn/sub").name == "echo.openfaas-fn");
}

TEST_CASE("a function reference splits at its last dot unless the whole name exists") {
  auto none = [](std::string_view) { return false; };
  auto q = api::split_function_name("echo.openfaas-fn", none);
  CHECK(q.name == "echo");
  CHECK(q.namespace_name == "openfaas-fn");
  q = api::split_function_name("my.fn.openfaas-fn", none);
  CHECK(q.name == "my.fn");
  CHECK(q.namespace_name == "openfaas-fn");
  q = api::split_function_name("echo", none);
  CHECK(q.name == "echo");
  CHECK(q.namespace_name.empty());
  q = api::split_function_name("my.fn", [](std::string_view n) { return n == "my.fn"; });
  CHECK(q.name == "my.fn");
  CHECK(q.namespace_name.empty());
}

TEST_CASE("only openfaas-fn (or none) is a valid namespace") {
  CHECK(api::check_namespace("", "x").ok());
  CHECK(api::check_namespace("openfaas-fn", "x").ok());
  auto st = api::check_namespace("other", "query parameter 'namespace'");
  REQUIRE(!st.ok());
  CHECK(contains(st.error().message(), "'namespace'"));
  CHECK(contains(st.error().message(), "'other'"));
  CHECK(contains(st.error().message(), "openfaas-fn"));
}

TEST_CASE("faas-cli's deploy body parses with every field kept") {
  // As faas-cli 0.16 marshals types.FunctionDeployment (field order of the struct).
  std::string json = R"({"service":"fn1","image":"/tmp:latest","namespace":"openfaas-fn",
    "envProcess":"./echo","envVars":{"A":"1"},"constraints":["kubernetes.io/os=linux",
    "node.platform.os == linux"],"labels":{"com.openfaas.scale.max":"3"},"annotations":{"x":"y"},
    "limits":{"memory":"64Mi","cpu":"500m"},"requests":{"memory":"32Mi"},
    "readOnlyRootFilesystem":true})";
  auto spec = parse_deploy(json, DeployLimits{});
  REQUIRE(spec.ok());
  auto &s = **spec;
  CHECK(s.image == "/tmp");
  CHECK(s.image_reference == "/tmp:latest");
  CHECK(s.namespace_name == "openfaas-fn");
  CHECK(s.constraints.size() == 2);
  CHECK(s.requests_memory == "32Mi");
  CHECK(s.read_only_root_fs);
}

TEST_CASE("Go's null maps and omitted namespace are accepted") {
  auto spec = parse_deploy(R"({"service":"fn","image":"/tmp","envProcess":"x","envVars":null,
    "labels":null,"annotations":null,"secrets":[]})", DeployLimits{});
  REQUIRE(spec.ok());
  CHECK((*spec)->namespace_name == "openfaas-fn");
  CHECK((*spec)->labels.empty());
}

TEST_CASE("FunctionDeployment fields faasvisor cannot honour are refused by name") {
  const std::string head = R"({"service":"a","image":"/tmp","envProcess":"x",)";
  CHECK(contains(deploy_error(head + R"("namespace":"team-a"})"), "'namespace'"));
  CHECK(contains(deploy_error(head + R"("requests":{"cpu":"100m"}})"), "'requests.cpu'"));
  CHECK(contains(deploy_error(head + R"("requests":{"memory":"1Gi"}})"), "'requests.memory'"));
  CHECK(contains(deploy_error(head + R"("limits":{"memory":"64Mi"},"requests":{"memory":"65Mi"}})"),
                 "must not exceed limits.memory"));
  CHECK(contains(deploy_error(head + R"("limits":{"nvidia.com/gpu":"1"}})"), "'limits.nvidia.com/gpu'"));
  CHECK(contains(deploy_error(head + R"("constraints":["kubernetes.io/arch=s390x"]})"), "'constraints'"));
  CHECK(contains(deploy_error(head + R"("constraints":["no operator"]})"), "'constraints'"));
  CHECK(contains(deploy_error(head + R"("constraints":"kubernetes.io/os=linux"})"), "'constraints'"));
  CHECK(contains(deploy_error(head + R"("readOnlyRootFilesystem":"yes"})"), "'readOnlyRootFilesystem'"));
  CHECK(contains(deploy_error(head + R"("readOnlyRootFilesystem":true,"annotations":{"faasvisor.backend":"microvm"}})"),
                 "'readOnlyRootFilesystem'"));
  CHECK(contains(deploy_error(head + R"("secrets":["../db-password"]})"), "'secrets'"));
  CHECK(contains(deploy_error(head + R"("registryAuth":"abc"})"), "'registryAuth'"));
}

TEST_CASE("constraints are matched against the node's labels") {
  std::map<std::string, std::string> labels{{"kubernetes.io/os", "linux"}, {"node.platform.os", "linux"}};
  CHECK(*api::constraint_met("kubernetes.io/os=linux", labels));
  CHECK(*api::constraint_met("node.platform.os == linux", labels));
  CHECK(!*api::constraint_met("node.platform.os == windows", labels));
  CHECK(*api::constraint_met("node.platform.os != windows", labels));
  CHECK(!*api::constraint_met("node.role == manager", labels));
  CHECK(!api::constraint_met("linux", labels).ok());
  CHECK(!api::constraint_met(" == linux", labels).ok());
  auto mine = api::node_labels();
  CHECK(mine.at("kubernetes.io/os") == "linux");
  CHECK(!mine.at("kubernetes.io/hostname").empty());
}

TEST_CASE("an image's trailing :TAG is dropped only when the path exists without it") {
  char dir[] = "/tmp/fv-openfaas-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string base = dir;
  std::string image = base + ":latest";
  CHECK(api::resolve_image_tag(image));
  CHECK(image == base);
  image = base;
  CHECK(!api::resolve_image_tag(image));  // exists as is
  std::string tagged_dir = base + "/fn:v2";
  REQUIRE(mkdir(tagged_dir.c_str(), 0700) == 0);
  image = tagged_dir;
  CHECK(!api::resolve_image_tag(image));  // a directory whose name has a colon stays
  CHECK(image == tagged_dir);
  image = base + "/missing:latest";
  CHECK(!api::resolve_image_tag(image));  // neither exists: the caller reports the original
  CHECK(image == base + "/missing:latest");
  image = "/:latest";
  CHECK(!api::resolve_image_tag(image));
  rmdir(tagged_dir.c_str());
  rmdir(dir);
}

TEST_CASE("createdAt is RFC 3339 with nanoseconds in UTC") {
  CHECK(api::format_rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z");
  CHECK(api::format_rfc3339_ns(1'764'754'200'123'456'789ull) == "2025-12-03T09:30:00.123456789Z");
}

TEST_CASE("delete and scale bodies carry an optional namespace") {
  CHECK(*parse_delete(R"({"functionName":"a","namespace":"openfaas-fn"})") == "a");
  CHECK(*parse_delete(R"({"functionName":"a"})") == "a");
  auto bad = parse_delete(R"({"functionName":"a","namespace":"other"})");
  REQUIRE(!bad.ok());
  CHECK(contains(bad.error().message(), "'namespace'"));
  CHECK(parse_scale(R"({"serviceName":"a","replicas":1,"namespace":"openfaas-fn"})").ok());
  CHECK(!parse_scale(R"({"serviceName":"a","replicas":1,"namespace":"x"})").ok());
}
