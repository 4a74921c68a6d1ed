#include <doctest/doctest.h>

#include <string>

#include "api/deploy.h"
#include "util/json.h"
#include "api/router.h"

using namespace faasvisor;
using api::RouteKind;

TEST_CASE("routes map methods and paths to typed actions") {
  CHECK(api::route("GET", "/healthz").kind == RouteKind::healthz);
  CHECK(api::route("GET", "/system/functions").kind == RouteKind::list_functions);
  CHECK(api::route("POST", "/system/functions").kind == RouteKind::deploy);
  CHECK(api::route("PUT", "/system/functions").kind == RouteKind::update);
  CHECK(api::route("DELETE", "/system/functions").kind == RouteKind::remove);
  CHECK(api::route("DELETE", "/system/stats").kind == RouteKind::reset_stats);
  auto g = api::route("GET", "/system/function/echo");
  CHECK(g.kind == RouteKind::get_function);
  CHECK(g.name == "echo");
  auto s = api::route("POST", "/system/scale-function/hash");
  CHECK(s.kind == RouteKind::scale);
  CHECK(s.name == "hash");
}

TEST_CASE("invocation routes keep the function name and the sub-path") {
  auto r = api::route("PATCH", "/function/echo/a/b");
  CHECK(r.kind == RouteKind::invoke);
  CHECK(r.name == "echo");
  CHECK(r.subpath == "/a/b");
  auto bare = api::route("GET", "/function/echo");
  CHECK(bare.subpath == "/");
  CHECK(api::route("GET", "/function/").kind == RouteKind::not_found);
}

TEST_CASE("a known path with the wrong method is 405 with an Allow list") {
  auto r = api::route("PATCH", "/system/functions");
  CHECK(r.kind == RouteKind::method_not_allowed);
  CHECK(std::string(r.allow) == "GET, POST, PUT, DELETE");
  CHECK(api::route("GET", "/nope").kind == RouteKind::not_found);
  CHECK(api::route("GET", "/system/function/a/b").kind == RouteKind::not_found);
}

TEST_CASE("durations, memory and cpu quantities parse as Kubernetes and Go write them") {
  CHECK(*parse_duration_ms("500ms") == 500);
  CHECK(*parse_duration_ms("30s") == 30000);
  CHECK(*parse_duration_ms("1.5s") == 1500);
  CHECK(*parse_duration_ms("2m") == 120000);
  CHECK(!parse_duration_ms("soon"));
  CHECK(!parse_duration_ms("10x"));
  CHECK(*parse_memory_bytes("128Mi") == 128ull << 20);
  CHECK(*parse_memory_bytes("1G") == 1000000000ull);
  CHECK(*parse_memory_bytes("4096") == 4096);
  CHECK(!parse_memory_bytes("12Qi"));
  CHECK(*parse_cpu_millis("1") == 1000);
  CHECK(*parse_cpu_millis("0.5") == 500);
  CHECK(*parse_cpu_millis("250m") == 250);
  CHECK(!parse_cpu_millis("-1"));
}

TEST_CASE("a full deployment parses with derived limits") {
  std::string json = R"({"service":"echo","image":"/tmp","envProcess":"./echo --fast 'two words'",
    "envVars":{"A":"1"},"limits":{"memory":"64Mi","cpu":"500m"},
    "labels":{"com.openfaas.scale.max":"7"},
    "annotations":{"faasvisor.backend":"process","faasvisor.timeout":"2s","faasvisor.queue":"3"},
    "secrets":[], "constraints":[]})";
  auto spec = parse_deploy(json, DeployLimits{});
  REQUIRE(spec.ok());
  auto &s = **spec;
  CHECK(s.name == "echo");
  CHECK(s.argv == std::vector<std::string>{"./echo", "--fast", "two words"});
  CHECK(s.memory_bytes == 64ull << 20);
  CHECK(s.cpu_millis == 500);
  CHECK(s.max_instances == 7);
  CHECK(s.timeout_ms == 2000);
  CHECK(s.queue_limit == 3);
  CHECK(s.env_vars.size() == 1);
}

TEST_CASE("bad deployments name the field that is wrong") {
  auto message = [](std::string json) {
    auto r = parse_deploy(json, DeployLimits{});
    REQUIRE(!r.ok());
    return r.error().message();
  };
  CHECK(message("{").find("invalid JSON") != std::string::npos);
  CHECK(message("[1]").find("object") != std::string::npos);
  CHECK(message(R"({"image":"/tmp","envProcess":"x"})").find("'service'") != std::string::npos);
  CHECK(message(R"({"service":"a b","image":"/tmp","envProcess":"x"})").find("'service'") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/nonexistent-dir","envProcess":"x"})").find("'image'") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/tmp"})").find("'envProcess'") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/tmp","envProcess":"x","limits":{"memory":"lots"}})").find("'limits.memory'") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/tmp","envProcess":"x","labels":{"com.openfaas.scale.max":"0"}})").find("com.openfaas.scale.max") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/tmp","envProcess":"x","annotations":{"faasvisor.timeout":"forever"}})").find("faasvisor.timeout") != std::string::npos);
  CHECK(message(R"({"service":"a","image":"/tmp","envProcess":"x","envVars":{"A":1}})").find("'envVars'") != std::string::npos);
  CHECK(message(R"({"service":5})").find("'service'") != std::string::npos);
}

TEST_CASE("faasvisor.template is on for the Python runtime by default, on or off when asked") {
  auto spec = [](std::string command, std::string annotations) {
    auto r = parse_deploy(R"({"service":"t","image":"/tmp","envProcess":")" + command +
                              R"(","annotations":{)" + annotations + "}}",
                          DeployLimits{});
    return r;
  };
  const std::string python = "/usr/bin/python3 ../../runtimes/python/faasvisor_runtime.py handler";
  auto py = spec(python, "");
  REQUIRE(py.ok());
  CHECK((*py)->use_template);
  auto c = spec("/usr/bin/true", "");
  REQUIRE(c.ok());
  CHECK(!(*c)->use_template);  // auto: only the runtime the node recognises
  auto c_on = spec("/usr/bin/true", R"("faasvisor.template":"on")");
  REQUIRE(c_on.ok());
  CHECK((*c_on)->use_template);  // a C SDK program: the deployment says so
  auto py_off = spec(python, R"("faasvisor.template":"off")");
  REQUIRE(py_off.ok());
  CHECK(!(*py_off)->use_template);
  auto bad = spec(python, R"("faasvisor.template":"maybe")");
  REQUIRE(!bad.ok());
  CHECK(bad.error().message().find("faasvisor.template") != std::string::npos);
  auto vm = spec(python, R"("faasvisor.template":"on","faasvisor.backend":"crun")");
  REQUIRE(!vm.ok());
  CHECK(vm.error().message().find("process backend") != std::string::npos);
  CHECK(runs_runtime({"python3", "/x/runtimes/python/faasvisor_runtime.py", "m"}, "faasvisor_runtime.py"));
  CHECK(!runs_runtime({"node", "/x/faasvisor_runtime.js", "m"}, "faasvisor_runtime.py"));
  auto node_on = spec("/usr/bin/node ../../runtimes/node/faasvisor_runtime.js handler", R"("faasvisor.template":"on")");
  REQUIRE(!node_on.ok());
  CHECK(node_on.error().message().find("Node.js") != std::string::npos);
}

TEST_CASE("delete and scale bodies are validated") {
  CHECK(*parse_delete(R"({"functionName":"echo"})") == "echo");
  CHECK(!parse_delete(R"({"name":"echo"})"));
  auto s = parse_scale(R"({"serviceName":"echo","replicas":20})");
  REQUIRE(s.ok());
  CHECK(s->replicas == 20);
  CHECK(!parse_scale(R"({"serviceName":"echo","replicas":-1})"));
  CHECK(!parse_scale(R"({"replicas":"many"})"));
}

TEST_CASE("the JSON writer places commas and escapes strings") {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("a", 1).field("b", "x\"y");
  w.key("c").begin_array().number(uint64_t{1}).string("z").end_array();
  w.key("d").begin_object().end_object();
  w.end_object();
  CHECK(out == R"({"a":1,"b":"x\"y","c":[1,"z"],"d":{}})");
}

TEST_CASE("image routes: upload, list, fetch (for peers) and remove by digest") {
  using faasvisor::api::route;
  using faasvisor::api::RouteKind;
  CHECK(route("POST", "/system/images").kind == RouteKind::upload_image);
  CHECK(route("GET", "/system/images").kind == RouteKind::list_images);
  auto r = route("DELETE", "/system/images/sha256:abc");
  CHECK(r.kind == RouteKind::remove_image);
  CHECK(r.name == "sha256:abc");
  CHECK(route("PUT", "/system/images").kind == RouteKind::method_not_allowed);
  CHECK(route("DELETE", "/system/images/").kind == RouteKind::not_found);
  auto g = route("GET", "/system/images/sha256:abc");
  CHECK(g.kind == RouteKind::get_image);
  CHECK(g.name == "sha256:abc");
  CHECK(route("GET", "/system/images/sha256:abc/x").kind == RouteKind::not_found);
  auto put = route("PUT", "/system/images/sha256:abc");
  CHECK(put.kind == RouteKind::method_not_allowed);
  CHECK(std::string_view(put.allow) == "GET, DELETE");
}
