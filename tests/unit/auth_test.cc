// API authentication and image roots (src/api/auth.h, src/api/image_roots.h).
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "api/auth.h"
#include "api/deploy.h"
#include "api/image_roots.h"

using namespace faasvisor;

namespace {
std::string make_temp_dir() {
  char tmpl[] = "/tmp/fv-unit-auth-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}
void write_file(const std::string &path, const std::string &text) {
  FILE *f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
}
}  // namespace

TEST_CASE("basic auth matches user:password in standard base64, the scheme in any case") {
  api::BasicAuthCredentials c{"admin", "pa:ss"};
  // base64("admin:pa:ss") = YWRtaW46cGE6c3M=
  CHECK(api::basic_auth_matches("Basic YWRtaW46cGE6c3M=", c));
  CHECK(api::basic_auth_matches("basic YWRtaW46cGE6c3M=", c));
  CHECK(api::basic_auth_matches("BASIC YWRtaW46cGE6c3M=", c));
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW46cGE6c3M", c));    // unpadded
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW46cGE6c3Q=", c));   // "admin:pa:st"
  CHECK_FALSE(api::basic_auth_matches("Bearer YWRtaW46cGE6c3M=", c));
  CHECK_FALSE(api::basic_auth_matches("Basic  YWRtaW46cGE6c3M=", c));
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW4=", c));           // "admin": no colon
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW46", c));           // "admin:": empty password
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW46cGE6c3Mx", c));   // "admin:pa:ss1"
  CHECK_FALSE(api::basic_auth_matches("Basic YWRtaW5pc3RyYXRvcjpwYTpzcw==", c));  // longer user
  CHECK_FALSE(api::basic_auth_matches("", c));
  CHECK_FALSE(api::basic_auth_matches("Basic =", c));
}

TEST_CASE("only /system/* needs credentials, and /metrics when protected") {
  CHECK(api::path_needs_auth("/system/functions", false));
  CHECK(api::path_needs_auth("/system/anything/else", false));
  CHECK(api::path_needs_auth("/system", false));
  CHECK_FALSE(api::path_needs_auth("/systemd", false));
  CHECK_FALSE(api::path_needs_auth("/function/echo", false));
  CHECK_FALSE(api::path_needs_auth("/async-function/echo", false));
  CHECK_FALSE(api::path_needs_auth("/healthz", false));
  CHECK_FALSE(api::path_needs_auth("/metrics", false));
  CHECK(api::path_needs_auth("/metrics", true));
}

TEST_CASE("credential files are trimmed like the OpenFaaS gateway's; empty or missing ones are errors") {
  std::string dir = make_temp_dir();
  CHECK_FALSE(api::read_basic_auth(dir).ok());
  write_file(dir + "/basic-auth-user", "  admin\n");
  write_file(dir + "/basic-auth-password", "\tsecret with space \r\n");
  auto c = api::read_basic_auth(dir);
  REQUIRE(c.ok());
  CHECK(c->user == "admin");
  CHECK(c->password == "secret with space");
  write_file(dir + "/basic-auth-password", " \n");
  auto empty = api::read_basic_auth(dir);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().message().find("empty") != std::string::npos);
  unlink((dir + "/basic-auth-user").c_str());
  unlink((dir + "/basic-auth-password").c_str());
  rmdir(dir.c_str());
}

TEST_CASE("image roots compare resolved paths: dot-dot and symbolic links cannot lead out") {
  std::string dir = make_temp_dir();
  std::string root = dir + "/root";
  REQUIRE(mkdir(root.c_str(), 0755) == 0);
  REQUIRE(mkdir((root + "/fn").c_str(), 0755) == 0);
  REQUIRE(mkdir((dir + "/outside").c_str(), 0755) == 0);
  REQUIRE(symlink("/etc", (root + "/etc-link").c_str()) == 0);
  REQUIRE(symlink((dir + "/outside").c_str(), (root + "/out-link").c_str()) == 0);
  auto roots = api::ImageRoots::create({root});
  REQUIRE(roots.ok());
  CHECK(roots->check(root + "/fn").ok());
  CHECK(roots->check(root).ok());
  CHECK(roots->check(root + "/fn/../fn").ok());
  CHECK(roots->check(root + "/not-yet").ok());  // judged by its parent: under the root
  for (std::string bad : {std::string("/"), std::string("/etc"), root + "/../outside", root + "/etc-link",
                          root + "/out-link", root + "/fn/../../outside", dir + "/root-sibling", std::string("/nonexistent")}) {
    auto r = roots->check(bad);
    CHECK_MESSAGE(!r.ok(), bad);
    if (!r.ok()) CHECK(r.error().message().find(roots->roots()[0]) != std::string::npos);
  }
  CHECK_FALSE(api::ImageRoots::create({dir + "/nope"}).ok());
  CHECK_FALSE(api::ImageRoots::create({"relative"}).ok());
  auto none = api::ImageRoots::create({});
  REQUIRE(none.ok());
  CHECK(none->check("/tmp").error().message().find("no --image-root") != std::string::npos);
  CHECK(api::path_within("/a/b", "/a"));
  CHECK_FALSE(api::path_within("/ab", "/a"));
  CHECK(api::path_within("/anything", "/"));
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("deploy refuses an image outside the roots with its own error, and oversized environments") {
  auto roots = api::ImageRoots::create({"/usr"});
  REQUIRE(roots.ok());
  DeployLimits limits;
  limits.image_roots = &*roots;
  auto refused = parse_deploy(R"({"service":"a","image":"/etc","envProcess":"x"})", limits);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().context == kOutsideImageRoots);
  std::string env;
  for (int i = 0; i < 257; ++i) env += (i ? "," : "") + std::string("\"V") + std::to_string(i) + "\":\"1\"";
  auto many = parse_deploy(R"({"service":"a","image":"/usr","envProcess":"x","envVars":{)" + env + "}}", DeployLimits{});
  REQUIRE_FALSE(many.ok());
  CHECK(many.error().message().find("'envVars'") != std::string::npos);
}
