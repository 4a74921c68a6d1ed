// OCI images: the pure parts (image/layout.h) and layer application (image/unpack.h) on
// layers made here with libarchive's writer, in a temporary directory.
#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>
#include <simdjson.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/environment.h"
#include "backend/oci.h"
#include "image/layout.h"
#include "image/pull.h"
#include "image/unpack.h"
#include "sha256.h"

using namespace faasvisor;
using namespace faasvisor::image;

namespace {

struct Entry {
  std::string path;
  char kind = 'f';  // f file, d dir, l symlink, h hardlink
  std::string data; // file content, or link target
};

// An uncompressed tar in a memfd, read from the start.
int make_layer(const std::vector<Entry> &entries, std::string *bytes_out = nullptr) {
  std::vector<char> buf(1 << 20);
  size_t used = 0;
  archive *a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (const Entry &e : entries) {
    archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.path.c_str());
    switch (e.kind) {
      case 'd': archive_entry_set_filetype(ae, AE_IFDIR); archive_entry_set_perm(ae, 0755); break;
      case 'l': archive_entry_set_filetype(ae, AE_IFLNK); archive_entry_set_symlink(ae, e.data.c_str()); break;
      case 'h': archive_entry_set_filetype(ae, AE_IFREG); archive_entry_set_hardlink(ae, e.data.c_str()); break;
      default:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
    }
    REQUIRE(archive_write_header(a, ae) == ARCHIVE_OK);
    if (e.kind == 'f') archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  int fd = memfd_create("layer", MFD_CLOEXEC);
  REQUIRE(write(fd, buf.data(), used) == static_cast<ssize_t>(used));
  lseek(fd, 0, SEEK_SET);
  if (bytes_out != nullptr) *bytes_out = std::string(buf.data(), used);
  return fd;
}

int remove_one(const char *path, const struct stat *, int, struct FTW *) { return remove(path); }

struct TempRoot {
  std::string path;
  int fd = -1;
  TempRoot() {
    char templ[] = "/tmp/fv-unpack-test-XXXXXX";
    path = mkdtemp(templ);
    fd = open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  ~TempRoot() {
    close(fd);
    nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS);
  }
  bool exists(const std::string &rel) const {
    struct stat st{};
    return fstatat(fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }
  std::string read(const std::string &rel) const {
    int f = openat(fd, rel.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) return "<missing>";
    char buf[256];
    ssize_t n = ::read(f, buf, sizeof buf);
    close(f);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }
};

Status apply(TempRoot &root, const std::vector<Entry> &entries, std::string digest = {}, uint64_t size = 0) {
  int fd = make_layer(entries);
  UnpackLimits limits;
  uint64_t bytes = 0, count = 0;
  Status st = apply_layer(root.fd, fd, digest, size, limits, &bytes, &count);
  close(fd);
  return st;
}

std::string message_of(const Status &st) { return st.ok() ? "ok" : st.error().message(); }

}  // namespace

TEST_CASE("layer entry paths are made relative; escapes are refused") {
  CHECK(*clean_entry_path("./usr/bin/x") == "usr/bin/x");
  CHECK(*clean_entry_path("usr//lib/./y/") == "usr/lib/y");
  CHECK(*clean_entry_path("./") == "");
  CHECK(*clean_entry_path("a..b/..c") == "a..b/..c");
  CHECK_FALSE(clean_entry_path("../etc/passwd"));
  CHECK_FALSE(clean_entry_path("a/../../b"));
  CHECK_FALSE(clean_entry_path("a/.."));
  CHECK_FALSE(clean_entry_path("/etc/passwd"));
}

TEST_CASE("split_on keeps empty parts") {
  CHECK(split_on("a::b", ':') == std::vector<std::string_view>{"a", "", "b"});
  CHECK(split_on("", ':') == std::vector<std::string_view>{""});
  CHECK(split_on("/x/", '/') == std::vector<std::string_view>{"", "x", ""});
}

TEST_CASE("digests") {
  CHECK(valid_digest("sha256:" + std::string(64, 'a')));
  CHECK_FALSE(valid_digest("sha256:" + std::string(63, 'a')));
  CHECK_FALSE(valid_digest("sha256:" + std::string(64, 'A')));
  CHECK_FALSE(valid_digest("sha512:" + std::string(64, 'a')));
  CHECK_FALSE(valid_digest("sha256:../../" + std::string(58, 'a')));
}

TEST_CASE("index, manifest and config parsing") {
  std::string d1 = "sha256:" + std::string(64, '1'), d2 = "sha256:" + std::string(64, '2');
  std::string m = "application/vnd.oci.image.manifest.v1+json";
  auto one = parse_index(R"({"schemaVersion":2,"manifests":[{"mediaType":")" + m + R"(","digest":")" + d1 + R"(","size":10}]})");
  REQUIRE(one);
  CHECK(one->digest == d1);
  CHECK(one->size == 10);
  auto two = parse_index(R"({"manifests":[{"mediaType":")" + m + R"(","digest":")" + d1 +
                         R"(","size":1,"platform":{"os":"linux","architecture":"arm64"}},{"mediaType":")" + m +
                         R"(","digest":")" + d2 + R"(","size":2,"platform":{"os":"linux","architecture":"amd64"}}]})");
  REQUIRE(two);
  CHECK(two->digest == d2);
  CHECK_FALSE(parse_index(R"({"manifests":[]})"));
  CHECK_FALSE(parse_index(R"({"manifests":[{"mediaType":")" + m + R"(","digest":"sha256:zz","size":1}]})"));
  CHECK_FALSE(parse_index("not json"));

  auto manifest = parse_manifest(R"({"config":{"digest":")" + d1 + R"(","size":5},"layers":[{"digest":")" + d2 +
                                 R"(","size":7},{"digest":")" + d1 + R"(","size":5}]})");
  REQUIRE(manifest);
  CHECK(manifest->config.digest == d1);
  REQUIRE(manifest->layers.size() == 2);
  CHECK(manifest->layers[0].digest == d2);
  CHECK_FALSE(parse_manifest(R"({"layers":[]})"));

  auto config = parse_config(R"({"config":{"Entrypoint":["/bin/x","-a"],"Cmd":null,"Env":["A=1"],"WorkingDir":"/w"}})");
  REQUIRE(config);
  CHECK(config->entrypoint == std::vector<std::string>{"/bin/x", "-a"});
  CHECK(config->cmd.empty());
  CHECK(config->env == std::vector<std::string>{"A=1"});
  CHECK(config->working_dir == "/w");
  CHECK(parse_config(R"({"architecture":"amd64"})"));  // no runtime config at all
  CHECK_FALSE(parse_config(R"({"config":{"Cmd":"not an array"}})"));
}

TEST_CASE("apply_image: the image's command, env and cwd; the deployment overrides") {
  Resolved image;
  image.digest = "sha256:" + std::string(64, 'f');
  image.rootfs = "/cache/sha256/fff/rootfs";
  image.config.entrypoint = {"/usr/bin/python3"};
  image.config.cmd = {"handler"};
  image.config.env = {"PATH=/usr/bin", "MODE=image", "NOEQUALS"};
  image.config.working_dir = "/function";

  FunctionSpec spec;
  spec.image = "/images/py.oci";
  spec.backend = "crun";
  spec.env_vars = {{"MODE", "deployment"}};
  REQUIRE(apply_image(spec, image).ok());
  CHECK(spec.argv == std::vector<std::string>{"/usr/bin/python3", "handler"});
  CHECK(spec.image_env == std::vector<std::string>{"PATH=/usr/bin"});
  CHECK(spec.cwd == "/function");
  CHECK(spec.rootfs == image.rootfs);
  CHECK(spec.image_digest == image.digest);

  FunctionSpec overridden;
  overridden.image = "/images/py.oci";
  overridden.backend = "gvisor";
  overridden.argv = {"/bin/other"};  // from envProcess
  REQUIRE(apply_image(overridden, image).ok());
  CHECK(overridden.argv == std::vector<std::string>{"/bin/other"});

  Resolved bare = image;
  bare.config = {};
  FunctionSpec nothing;
  nothing.image = "/images/bare.oci";
  nothing.backend = "crun";
  Status st = apply_image(nothing, bare);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().message().find("no runnable entrypoint") != std::string::npos);
  CHECK(nothing.cwd == "/");

  FunctionSpec process;
  process.image = "/images/py.oci";
  REQUIRE_FALSE(apply_image(process, image).ok());
}

TEST_CASE("apply_image: an OpenFaaS watchdog image's fprocess, mode and upstream_url decide the mode") {
  Resolved image;
  image.digest = "sha256:" + std::string(64, 'e');
  image.rootfs = "/cache/sha256/eee/rootfs";
  image.config.cmd = {"fwatchdog"};
  image.config.env = {"fprocess=python index.py", "mode=http", "upstream_url=http://127.0.0.1:5000"};

  FunctionSpec http;
  http.image = "/images/py3http.oci";
  http.backend = "crun";
  REQUIRE(apply_image(http, image).ok());
  CHECK(http.mode == FunctionSpec::Mode::http);
  CHECK(http.port == 5000);
  CHECK(http.argv == std::vector<std::string>{"python", "index.py"});  // fprocess, not the watchdog
  CHECK(backend::instance_argv(http, "/a") ==
        std::vector<std::string>{"/a", "http", "5000", "-", "--", "python", "index.py"});

  // The classic watchdog: fprocess alone; of-watchdog's forking modes are the same.
  for (const char *mode : {"", "streaming", "serializing"}) {
    Resolved classic = image;
    classic.config.env = {"fprocess=cat"};
    if (*mode) classic.config.env.push_back(std::string("mode=") + mode);
    FunctionSpec spec;
    spec.image = "/images/classic.oci";
    spec.backend = "runc";
    REQUIRE(apply_image(spec, classic).ok());
    CHECK(spec.mode == FunctionSpec::Mode::stdio);
    CHECK(backend::instance_argv(spec, "/a") == std::vector<std::string>{"/a", "stdio", "--", "cat"});
  }

  // envVars override the image, the annotation overrides both; envProcess replaces fprocess.
  FunctionSpec annotated;
  annotated.image = "/images/py3http.oci";
  annotated.backend = "gvisor";
  annotated.env_vars = {{"upstream_url", "http://127.0.0.1:6000/"}};
  annotated.argv = {"/bin/server"};
  REQUIRE(apply_image(annotated, image).ok());
  CHECK(annotated.port == 6000);
  CHECK(annotated.argv == std::vector<std::string>{"/bin/server"});
  annotated.port = 7000;
  annotated.port_annotated = true;
  REQUIRE(apply_image(annotated, image).ok());
  CHECK(annotated.port == 7000);
  FunctionSpec protocol;
  protocol.image = "/images/py3http.oci";
  protocol.backend = "crun";
  protocol.mode_annotated = true;  // faasvisor.mode: protocol
  REQUIRE(apply_image(protocol, image).ok());
  CHECK(protocol.mode == FunctionSpec::Mode::protocol);
  CHECK(protocol.argv == std::vector<std::string>{"fwatchdog"});
  CHECK(backend::instance_argv(protocol, "/a") == protocol.argv);

  FunctionSpec unsupported;
  unsupported.image = "/images/py3http.oci";
  unsupported.backend = "crun";
  unsupported.env_vars = {{"mode", "static"}};
  Status st = apply_image(unsupported, image);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().message().find("of-watchdog mode 'static'") != std::string::npos);
}

TEST_CASE("the helper's answer round-trips") {
  Resolved r;
  r.digest = "sha256:" + std::string(64, 'c');
  r.rootfs = "/c/rootfs";
  r.unpacked = true;
  r.config.entrypoint = {"/x", "with \"quotes\"\n"};
  r.config.env = {"A=1"};
  r.config.working_dir = "/w";
  auto back = decode_resolved(encode_resolved(r));
  REQUIRE(back);
  CHECK(back->digest == r.digest);
  CHECK(back->rootfs == r.rootfs);
  CHECK(back->unpacked);
  CHECK(back->config.entrypoint == r.config.entrypoint);
  CHECK(back->config.env == r.config.env);
  CHECK(back->config.working_dir == "/w");
  auto failed = decode_resolved(encode_failure("image: layer 1 is corrupt"));
  REQUIRE_FALSE(failed);
  CHECK(failed.error().message() == "image: image: layer 1 is corrupt");
}

TEST_CASE("layers apply in order; whiteouts and opaque directories hide lower entries") {
  TempRoot root;
  REQUIRE(apply(root, {{"etc", 'd', ""}, {"etc/a", 'f', "a1"}, {"etc/b", 'f', "b1"}, {"d", 'd', ""},
                       {"d/x", 'f', "x"}, {"d/sub", 'd', ""}, {"d/sub/y", 'f', "y"}, {"tree", 'd', ""},
                       {"tree/leaf", 'f', "leaf"}, {"lib", 'l', "usr/lib"}, {"usr/lib", 'd', ""}})
              .ok());
  REQUIRE(apply(root, {{"etc/.wh.a", 'f', ""}, {"etc/b", 'f', "b2"}, {"d/new", 'f', "new"},
                       {"d/.wh..wh..opq", 'f', ""}, {".wh.tree", 'f', ""}, {"lib/libz.so", 'f', "z"},
                       {"etc/hard", 'h', "etc/b"}})
              .ok());
  CHECK_FALSE(root.exists("etc/a"));
  CHECK(root.read("etc/b") == "b2");
  CHECK(root.exists("d/new"));
  CHECK_FALSE(root.exists("d/x"));
  CHECK_FALSE(root.exists("d/sub"));
  CHECK_FALSE(root.exists("tree"));
  CHECK_FALSE(root.exists("etc/.wh.a"));
  CHECK_FALSE(root.exists("d/.wh..wh..opq"));
  CHECK(root.read("usr/lib/libz.so") == "z");  // written through a symlink inside the root
  CHECK(root.read("etc/hard") == "b2");
  // A file replaces a directory and a directory a file.
  REQUIRE(apply(root, {{"d", 'f', "now a file"}, {"etc/b", 'd', ""}}).ok());
  CHECK(root.read("d") == "now a file");
  struct stat st{};
  REQUIRE(fstatat(root.fd, "etc/b", &st, AT_SYMLINK_NOFOLLOW) == 0);
  CHECK(S_ISDIR(st.st_mode));
}

TEST_CASE("hostile layers are refused and write nothing outside the root") {
  TempRoot outside;  // stands for the host: nothing may appear in it
  std::string out = outside.path;
  struct Case {
    const char *name;
    std::vector<Entry> entries;
    const char *says;
  };
  std::vector<Case> cases = {
      {"dotdot", {{"../../../../../.." + out + "/f", 'f', "x"}}, "'..'"},
      {"absolute", {{out + "/f", 'f', "x"}}, "absolute"},
      {"absolute symlink", {{"esc", 'l', out}, {"esc/f", 'f', "x"}}, "leaves the image root"},
      {"relative symlink", {{"a", 'd', ""}, {"a/up", 'l', "../../../../../../.." + out}, {"a/up/f", 'f', "x"}},
       "leaves the image root"},
      {"symlink in the middle", {{"esc", 'l', out}, {"esc/sub/f", 'f', "x"}}, "leaves the image root"},
      {"whiteout through symlink", {{"esc", 'l', out}, {"esc/.wh.victim", 'f', ""}}, "leaves the image root"},
      {"hardlink dotdot", {{"h", 'h', "../../../../etc/passwd"}}, "outside the image root"},
      {"hardlink absolute", {{"h", 'h', "/etc/passwd"}}, "outside the image root"},
      {"hardlink through symlink", {{"esc", 'l', "/etc"}, {"h", 'h', "esc/passwd"}}, "leaves the image root"},
  };
  int victim = openat(outside.fd, "victim", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  close(victim);
  for (const Case &c : cases) {
    CAPTURE(c.name);
    TempRoot root;
    Status st = apply(root, c.entries);
    REQUIRE_FALSE(st.ok());
    CHECK(message_of(st).find(c.says) != std::string::npos);
    CHECK(message_of(st).find("refused") != std::string::npos);
  }
  CHECK_FALSE(outside.exists("f"));
  CHECK_FALSE(outside.exists("sub"));
  CHECK(outside.exists("victim"));
}

TEST_CASE("a layer whose bytes do not match its digest is corrupt") {
  std::string bytes;
  int fd = make_layer({{"f", 'f', "content"}}, &bytes);
  close(fd);
  uint8_t digest[SHA256_DIGEST_SIZE];
  char hex[64];
  sha256(bytes.data(), bytes.size(), digest);
  sha256_hex(digest, hex);
  std::string good = "sha256:" + std::string(hex, 64);
  {
    TempRoot root;
    CHECK(apply(root, {{"f", 'f', "content"}}, good, bytes.size()).ok());
  }
  {
    TempRoot root;
    Status st = apply(root, {{"f", 'f', "content!"}}, good, bytes.size());
    REQUIRE_FALSE(st.ok());
    CHECK(message_of(st).find("corrupt") != std::string::npos);
  }
}

TEST_CASE("config.json takes the image's env and cwd, the deployment's envVars after them") {
  FunctionSpec spec;
  spec.name = "py";
  spec.image = "/images/py.oci";
  spec.rootfs = "/cache/sha256/abc/rootfs";
  spec.argv = {"/usr/bin/python3", "handler"};
  spec.image_env = {"PATH=/usr/bin", "FROM_IMAGE=1"};
  spec.env_vars = {{"MODE", "deployment"}};
  spec.cwd = "/function";
  backend::OciConfigInput input;
  input.rootfs = spec.rootfs;
  input.hostname = spec.name;
  std::string json = backend::make_oci_config(spec, "py-1", input);
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(json);
  std::string_view cwd = doc["process"]["cwd"];
  CHECK(cwd == "/function");
  std::vector<std::string> env;
  for (auto e : doc["process"]["env"].get_array()) env.emplace_back(std::string_view(e));
  REQUIRE(env.size() >= 5);
  CHECK(env[0] == "PATH=/usr/bin");  // the image's PATH wins over the fallback
  CHECK(env[1] == "FROM_IMAGE=1");
  CHECK(env[2] == "MODE=deployment");
  int paths = 0;
  for (const std::string &e : env) paths += e.rfind("PATH=", 0) == 0;
  CHECK(paths == 1);
  std::string_view root = doc["root"]["path"];
  CHECK(root == "/cache/sha256/abc/rootfs");
}

TEST_CASE("registry references: registry, repository, tag and digest as docker pull reads them") {
  auto ref = parse_reference("127.0.0.1:5000/team/fn:v1");
  REQUIRE(ref);
  CHECK((ref->registry == "127.0.0.1:5000" && ref->repository == "team/fn" && ref->tag == "v1" && ref->digest.empty()));
  CHECK(ref->source() == "docker://127.0.0.1:5000/team/fn:v1");
  ref = parse_reference("python");
  REQUIRE(ref);
  CHECK(ref->source() == "docker://docker.io/library/python:latest");
  ref = parse_reference("ghcr.io/openfaas/figlet");
  REQUIRE(ref);
  CHECK(ref->source() == "docker://ghcr.io/openfaas/figlet:latest");
  ref = parse_reference("localhost/fn:1.0");
  REQUIRE(ref);
  CHECK(ref->registry == "localhost");
  std::string digest = "sha256:" + std::string(64, 'a');
  ref = parse_reference("registry.example:443/fn:tag@" + digest);
  REQUIRE(ref);
  CHECK((ref->digest == digest && ref->tag.empty()));
  CHECK(ref->source() == "docker://registry.example:443/fn@" + digest);
  for (const char *bad : {"Upper/case", "a//b", "fn:", "fn:-tag", "fn@sha256:abc", "host:1/-x", "x/y:t:u"})
    CHECK_FALSE(parse_reference(bad));
  CHECK(is_registry_reference("fn:latest"));
  CHECK_FALSE(is_registry_reference("/srv/images/fn"));
  CHECK_FALSE(is_registry_reference(digest));

  PullOptions options;
  options.insecure = {"127.0.0.1:5000"};
  auto argv = pull_command(options, *parse_reference("127.0.0.1:5000/fn:v1"), "/cache/tmp/pull.x/layout");
  auto has = [&](const std::string &a) { return std::find(argv.begin(), argv.end(), a) != argv.end(); };
  CHECK((has("--src-tls-verify=false") && has("--src-no-creds") && has("amd64")));
  CHECK(argv.back() == "oci:/cache/tmp/pull.x/layout");
  options.authfile = "/etc/faasvisor/auth.json";
  argv = pull_command(options, *parse_reference("other:5000/fn:v1"), "/d");
  CHECK((has("--src-tls-verify=true") && has("--src-authfile") && has("/etc/faasvisor/auth.json")));
}
