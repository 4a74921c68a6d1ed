// Secrets: request parsing (faas-provider's types.Secret), base64 as Go writes it, the
// deploy field, the table's checks, and the routes (secrets/, api/).
#include <doctest/doctest.h>

#include <string>

#include "api/deploy.h"
#include "api/router.h"
#include "faasvisor/frame.h"
#include "proc/spawn.h"
#include "secrets/request.h"
#include "secrets/table.h"
#include "util/base64.h"

using namespace faasvisor;
using secrets::parse_secret;

namespace {
std::string error_of(std::string_view json, bool want_value = true) {
  auto r = parse_secret(json, want_value);
  REQUIRE(!r.ok());
  return r.error().message();
}
}  // namespace

TEST_CASE("/system/secrets routes by method") {
  CHECK(api::route("GET", "/system/secrets").kind == api::RouteKind::list_secrets);
  CHECK(api::route("POST", "/system/secrets").kind == api::RouteKind::create_secret);
  CHECK(api::route("PUT", "/system/secrets").kind == api::RouteKind::update_secret);
  CHECK(api::route("DELETE", "/system/secrets").kind == api::RouteKind::delete_secret);
  api::Route patch = api::route("PATCH", "/system/secrets");
  CHECK(patch.kind == api::RouteKind::method_not_allowed);
  CHECK(std::string(patch.allow) == "GET, POST, PUT, DELETE");
}

TEST_CASE("a rawValue's base64 decodes with or without padding") {
  constexpr auto kOptional = Base64Padding::optional;
  CHECK(*base64_decode("", kOptional) == "");
  CHECK(*base64_decode("aGk=", kOptional) == "hi");
  CHECK(*base64_decode("aGk", kOptional) == "hi");
  CHECK(*base64_decode("c2VjcmV0", kOptional) == "secret");
  CHECK(*base64_decode("AP8B", kOptional) == std::string("\0\xff\x01", 3));
  CHECK(*base64_decode("+/+/", kOptional) == std::string("\xfb\xff\xbf", 3));
  for (const char *bad : {"a", "a===", "aGk*", "aG k", "aGk=x", "aGl=", "====", "-_"})
    CHECK_MESSAGE(!base64_decode(bad, kOptional), bad);
}

TEST_CASE("a secret body has a name and a value or a base64 rawValue") {
  auto plain = parse_secret(R"({"name":"api-key","value":"s3cr3t"})", true);
  REQUIRE(plain.ok());
  CHECK(plain->name == "api-key");
  CHECK(plain->value == "s3cr3t");
  auto raw = parse_secret(R"({"name":"blob","rawValue":"AP8B","namespace":"openfaas-fn"})", true);
  REQUIRE(raw.ok());
  CHECK(raw->value == std::string("\0\xff\x01", 3));
  auto empty = parse_secret(R"({"name":"e","value":""})", true);
  REQUIRE(empty.ok());
  CHECK(empty->value.empty());
  auto del = parse_secret(R"({"name":"api-key"})", false);
  REQUIRE(del.ok());
  CHECK(del->name == "api-key");
}

TEST_CASE("bad secret bodies name the field and never quote the value") {
  CHECK(error_of("{").find("invalid JSON") != std::string::npos);
  CHECK(error_of("[]").find("object") != std::string::npos);
  CHECK(error_of(R"({"value":"v"})").find("'name'") != std::string::npos);
  CHECK(error_of(R"({"name":"k"})").find("'value'") != std::string::npos);
  CHECK(error_of(R"({"name":"k","value":"v","rawValue":"dg=="})").find("not both") != std::string::npos);
  CHECK(error_of(R"({"name":"k","value":7})").find("'value'") != std::string::npos);
  CHECK(error_of(R"({"name":"k","rawValue":"not base64!"})").find("'rawValue'") != std::string::npos);
  CHECK(error_of(R"({"name":"k","value":"v","namespace":"other"})").find("'namespace'") != std::string::npos);
  for (const char *name : {"", "../x", "a/b", ".hidden", "-x", "sp ace"})
    CHECK(error_of(std::string(R"({"name":")") + name + R"(","value":"v"})").find("'name'") != std::string::npos);
  CHECK(error_of(R"({"name":")" + std::string(FV_SECRET_NAME_MAX + 1, 'n') + R"(","value":"v"})").find("'name'") != std::string::npos);
  std::string big(FV_SECRET_VALUE_MAX + 1, 'Q');
  std::string message = error_of(R"({"name":"k","value":")" + big + R"("})");
  CHECK(message.find("more than the limit") != std::string::npos);
  CHECK(message.find("QQQQ") == std::string::npos);
  CHECK(parse_secret(R"({"name":"k","value":")" + std::string(FV_SECRET_VALUE_MAX, 'Q') + R"("})", true).ok());
  CHECK(error_of(R"({"value":"v"})", false).find("'name'") != std::string::npos);
}

TEST_CASE("a deployment's secrets are names, at most 64") {
  std::string base = R"({"service":"f","image":"/tmp","envProcess":"x","secrets":)";
  auto spec = parse_deploy(base + R"(["a","b.c"]})", DeployLimits{});
  REQUIRE(spec.ok());
  CHECK((*spec)->secrets == std::vector<std::string>{"a", "b.c"});
  for (const char *bad : {R"("a")", R"([1])", R"(["../a"])", R"([""])"}) {
    auto r = parse_deploy(base + bad + "}", DeployLimits{});
    REQUIRE(!r.ok());
    CHECK(r.error().message().find("'secrets'") != std::string::npos);
  }
  std::string many = "[";
  for (unsigned i = 0; i <= FV_SECRETS_MAX_COUNT; ++i) many += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  auto r = parse_deploy(base + many + "]}", DeployLimits{});
  REQUIRE(!r.ok());
  CHECK(r.error().message().find("more than 64") != std::string::npos);
}

TEST_CASE("the table lets a function name only existing secrets that fit together") {
  secrets::SecretTable table;
  table.set("a", "1");
  table.set("b", std::string(FV_SECRET_VALUE_MAX, 'b'));
  CHECK(table.check_function({}).ok());
  CHECK(table.check_function({"a", "b"}).ok());
  CHECK(table.check_function({"missing"}).error().message().find("'missing'") != std::string::npos);
  CHECK(table.check_function({"a", "a"}).error().message().find("twice") != std::string::npos);
  table.begin_change("a", secrets::Change::remove);
  CHECK(table.check_function({"a"}).error().message().find("being deleted") != std::string::npos);
  table.end_change("a");
  std::vector<std::string> names;
  for (int i = 0; i < 9; ++i) {
    names.push_back("big" + std::to_string(i));
    table.set(names.back(), std::string(FV_SECRET_VALUE_MAX, 'x'));
  }
  CHECK(table.check_function(names).error().message().find("more than the limit") != std::string::npos);
  names.pop_back();
  CHECK(table.check_function(names).ok());
  CHECK(table.total_bytes({"a", "b"}, "a", 10) == 10 + FV_SECRET_VALUE_MAX);
  auto values = table.resolve({"a"});
  REQUIRE(values.ok());
  CHECK((*values)[0].value == "1");
  table.erase("a");
  CHECK(!table.resolve({"a"}));
  CHECK(table.names().size() == 10);
}

TEST_CASE("a GO message carries secrets after the limits, values as raw bytes, then the mode") {
  proc::GoSpec go;
  go.directory = "/d";
  go.argv = {"x"};
  std::string value("v\0w", 3);
  go.secrets = {{"k", value}};
  std::string message = proc::encode_go(go);
  uint32_t length = static_cast<uint8_t>(message[4]) | static_cast<uint8_t>(message[5]) << 8;
  CHECK(length == message.size() - 8);
  // Then the mode (0: exec; docs/templates.md) and the network fields (two empty strings: no
  // namespace to join).
  std::string tail = message.substr(message.size() - (4 + 4 + 1 + 4 + 3 + 4) - 8);
  CHECK(tail == std::string("\1\0\0\0\1\0\0\0k\3\0\0\0v\0w\0\0\0\0\0\0\0\0\0\0\0\0", 28));
}

TEST_CASE("a GO message has its mode before the network fields, and a start message names the instance") {
  proc::GoSpec go;
  go.directory = "/d";
  go.argv = {"x"};
  go.mode = proc::GoSpec::Mode::adopt;
  std::string message = proc::encode_go(go);
  // The mode, then the two (empty) network fields.
  CHECK(message.substr(message.size() - 12, 4) == std::string("\2\0\0\0", 4));
  std::string start = proc::encode_template_start("fn-7");
  CHECK(start == std::string("FVST\4\0\0\0fn-7", 12));
}

