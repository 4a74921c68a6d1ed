// config.json generation for the OCI backends: spec in, JSON out, parsed back with simdjson.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <cerrno>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "backend/oci.h"

using faasvisor::FunctionSpec;
using faasvisor::backend::make_oci_config;
using faasvisor::backend::OciConfigInput;

namespace {

FunctionSpec sample_spec() {
  FunctionSpec spec;
  spec.name = "echo";
  spec.image = "/srv/images/echo/rootfs";
  spec.argv = {"/echo", "--flag", "with \"quotes\" and \\ and\nnewline"};
  spec.env_vars = {{"GREETING", "hi"}, {"PATH", "/custom"}};
  spec.memory_bytes = 64ull << 20;
  spec.cpu_millis = 500;
  spec.pids_max = 32;
  return spec;
}

OciConfigInput sample_input() {
  OciConfigInput input;
  input.rootfs = "/srv/images/echo/rootfs";
  input.cgroups_path = "/faasvisor/node-42/echo-7";
  input.hostname = "echo";
  return input;
}

std::vector<std::string> strings(simdjson::dom::element array) {
  std::vector<std::string> out;
  for (simdjson::dom::element e : array.get_array()) out.emplace_back(std::string_view(e.get_string()));
  return out;
}

int64_t integer(simdjson::dom::element e) { return e.get_int64(); }

}  // namespace

TEST_CASE("oci config: process, root and user") {
  simdjson::dom::parser parser;
  std::string json = make_oci_config(sample_spec(), "echo-7", sample_input());
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);

  CHECK(std::string_view(doc["ociVersion"].get_string()).substr(0, 2) == "1.");
  auto process = doc["process"];
  CHECK(bool(process["terminal"].get_bool()) == false);
  CHECK(integer(process["user"]["uid"]) == 65534);
  CHECK(integer(process["user"]["gid"]) == 65534);
  CHECK(bool(process["noNewPrivileges"].get_bool()));
  CHECK(std::string_view(process["cwd"].get_string()) == "/");
  // Escapes survive the round trip.
  CHECK(strings(process["args"]) == sample_spec().argv);
  for (const char *set : {"bounding", "effective", "inheritable", "permitted", "ambient"})
    CHECK(process["capabilities"][set].get_array().size() == 0);

  std::vector<std::string> env = strings(process["env"]);
  std::set<std::string> env_set(env.begin(), env.end());
  CHECK(env_set.count("GREETING=hi") == 1);
  CHECK(env_set.count("PATH=/custom") == 1);  // the spec's PATH wins over the fallback
  CHECK(env_set.count("PATH=/usr/local/bin:/usr/bin:/bin") == 0);
  CHECK(env_set.count("HOME=/tmp") == 1);
  CHECK(env_set.count("FAASVISOR_FUNCTION=echo") == 1);
  CHECK(env_set.count("FAASVISOR_INSTANCE=echo-7") == 1);

  CHECK(std::string_view(doc["root"]["path"].get_string()) == "/srv/images/echo/rootfs");
  CHECK(bool(doc["root"]["readonly"].get_bool()));
  CHECK(std::string_view(doc["hostname"].get_string()) == "echo");
}

TEST_CASE("oci config: mounts give /proc, a minimal /dev and a private sized /tmp") {
  simdjson::dom::parser parser;
  std::string json = make_oci_config(sample_spec(), "echo-7", sample_input());
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  std::set<std::string> destinations;
  for (simdjson::dom::element m : doc["mounts"].get_array()) {
    std::string dest(std::string_view(m["destination"].get_string()));
    destinations.insert(dest);
    if (dest == "/tmp") {
      CHECK(std::string_view(m["type"].get_string()) == "tmpfs");
      std::vector<std::string> options = strings(m["options"]);
      std::set<std::string> opts(options.begin(), options.end());
      CHECK(opts.count("size=" + std::to_string((64ull << 20) / 4)) == 1);
      CHECK(opts.count("nodev") == 1);
    }
  }
  CHECK(destinations == std::set<std::string>{"/proc", "/dev", "/tmp"});
}

TEST_CASE("oci config: namespaces, cgroup path and limits") {
  simdjson::dom::parser parser;
  std::string json = make_oci_config(sample_spec(), "echo-7", sample_input());
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  auto linux_ = doc["linux"];
  CHECK(std::string_view(linux_["cgroupsPath"].get_string()) == "/faasvisor/node-42/echo-7");

  std::set<std::string> types;
  for (simdjson::dom::element ns : linux_["namespaces"].get_array()) {
    types.insert(std::string(std::string_view(ns["type"].get_string())));
    // No path: a new namespace (the network one then has only loopback).
    CHECK(ns["path"].error() == simdjson::NO_SUCH_FIELD);
  }
  CHECK(types == std::set<std::string>{"pid", "network", "ipc", "uts", "mount"});

  auto resources = linux_["resources"];
  CHECK(integer(resources["memory"]["limit"]) == int64_t{64} << 20);
  CHECK(integer(resources["cpu"]["quota"]) == 50'000);
  CHECK(integer(resources["cpu"]["period"]) == 100'000);
  CHECK(integer(resources["pids"]["limit"]) == 32);
  CHECK(linux_["maskedPaths"].get_array().size() > 0);
}

TEST_CASE("oci config: without cgroups there is no path and no limit") {
  simdjson::dom::parser parser;
  OciConfigInput input = sample_input();
  input.cgroups_path.clear();
  input.limits = false;
  std::string json = make_oci_config(sample_spec(), "echo-7", input);
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  CHECK(doc["linux"]["cgroupsPath"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(doc["linux"]["resources"]["memory"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(doc["linux"]["resources"]["devices"].get_array().size() == 1);
}

TEST_CASE("oci config: the default seccomp profile allows ordinary calls and denies the rest") {
  simdjson::dom::parser parser;
  std::string json = make_oci_config(sample_spec(), "echo-7", sample_input());
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  auto seccomp = doc["linux"]["seccomp"];
  CHECK(std::string_view(seccomp["defaultAction"].get_string()) == "SCMP_ACT_ERRNO");
  CHECK(integer(seccomp["defaultErrnoRet"]) == ENOSYS);
  std::set<std::string> allowed, denied;
  bool clone_filtered = false;
  for (simdjson::dom::element rule : seccomp["syscalls"].get_array()) {
    std::string_view action = rule["action"].get_string();
    std::vector<std::string> names = strings(rule["names"]);
    if (rule["args"].error() == simdjson::SUCCESS) {
      // clone only without namespace flags
      CHECK(names == std::vector<std::string>{"clone"});
      simdjson::dom::element arg = rule["args"].at(0);
      CHECK(std::string_view(arg["op"].get_string()) == "SCMP_CMP_MASKED_EQ");
      CHECK(integer(arg["value"]) == 0x7E020000);
      CHECK(integer(arg["valueTwo"]) == 0);
      clone_filtered = true;
      continue;
    }
    if (action == "SCMP_ACT_ALLOW") allowed.insert(names.begin(), names.end());
    if (action == "SCMP_ACT_ERRNO") {
      CHECK(integer(rule["errnoRet"]) == EPERM);
      denied.insert(names.begin(), names.end());
    }
  }
  CHECK(clone_filtered);
  for (const char *name : {"read", "write", "openat", "mmap", "futex", "execve", "epoll_wait", "socket", "exit_group"})
    CHECK_MESSAGE(allowed.count(name) == 1, name);
  for (const char *name : {"mount", "unshare", "setns", "ptrace", "bpf", "init_module", "kexec_load", "io_uring_setup"})
    CHECK_MESSAGE(denied.count(name) == 1, name);
  for (const std::string &name : allowed) CHECK_MESSAGE(denied.count(name) == 0, name);
  CHECK(allowed.count("clone") == 0);   // only through the filtered rule
  CHECK(allowed.count("clone3") == 0);  // ENOSYS: its flags cannot be inspected
}

TEST_CASE("oci config: an http or stdio function runs faasvisor-adapter, bound read-only into /dev") {
  simdjson::dom::parser parser;
  FunctionSpec spec = sample_spec();
  OciConfigInput input = sample_input();
  input.adapter_path = "/usr/lib/faasvisor/faasvisor-adapter";
  auto adapter_mounts = [&](simdjson::dom::element doc) {
    int found = 0;
    for (simdjson::dom::element m : doc["mounts"].get_array()) {
      if (std::string_view(m["destination"].get_string()) != faasvisor::backend::kAdapterInContainer) continue;
      ++found;
      CHECK(std::string_view(m["source"].get_string()) == input.adapter_path);
      std::vector<std::string> options = strings(m["options"]);
      CHECK(std::set<std::string>(options.begin(), options.end()).count("ro") == 1);
    }
    return found;
  };
  std::string plain = make_oci_config(spec, "echo-7", input);
  simdjson::dom::element doc;
  REQUIRE(parser.parse(plain).get(doc) == simdjson::SUCCESS);
  CHECK(adapter_mounts(doc) == 0);  // the protocol mode needs no adapter

  spec.mode = FunctionSpec::Mode::http;
  spec.port = 5000;
  std::string http = make_oci_config(spec, "echo-7", input);
  REQUIRE(parser.parse(http).get(doc) == simdjson::SUCCESS);
  CHECK(adapter_mounts(doc) == 1);
  std::vector<std::string> args = strings(doc["process"]["args"]);
  std::vector<std::string> expected{faasvisor::backend::kAdapterInContainer, "http", "5000", "-", "--"};
  expected.insert(expected.end(), spec.argv.begin(), spec.argv.end());
  CHECK(args == expected);
}
