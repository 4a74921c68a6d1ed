// The durable store on a real ring and a real directory (store/file_store.h, store/durable.h).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/ring.h"
#include "store/durable.h"
#include "store/file_store.h"
#include "store/store.h"
#include "server/records.h"

using namespace faasvisor;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/fv-store-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

struct Fixture {
  TempDir tmp;
  std::unique_ptr<io::Ring> ring{*io::Ring::create(64)};
  std::string dir() const { return tmp.path + "/state"; }

  std::unique_ptr<store::FileStore> open(store::FileStoreOptions options = {}) {
    options.dir = dir();
    auto s = store::FileStore::open(*ring, options);
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message()));
    return std::move(*s);
  }
  void drain(store::Store &s) {
    for (int i = 0; i < 10000 && !s.idle(); ++i) ring->run_once();
    REQUIRE(s.idle());
  }
  static std::map<std::string, std::string> as_map(const store::LoadReport &r) {
    std::map<std::string, std::string> out;
    for (const auto &rec : r.records) out[rec.kind + "/" + rec.key] = rec.value;
    return out;
  }
};

}  // namespace

TEST_CASE("a record file encodes its length and checksum and decode rejects any damage") {
  std::string bytes = store::FileStore::encode("hello world");
  CHECK(bytes.size() == 12 + 11);
  auto ok = store::FileStore::decode(bytes);
  REQUIRE(ok.ok());
  CHECK(*ok == "hello world");
  CHECK(store::FileStore::decode(bytes.substr(0, bytes.size() - 1)).ok() == false);  // truncated
  CHECK(store::FileStore::decode(bytes.substr(0, 5)).ok() == false);                 // header cut
  std::string flipped = bytes;
  flipped.back() ^= 1;
  CHECK(store::FileStore::decode(flipped).ok() == false);
  std::string magic = bytes;
  magic[0] = 'X';
  CHECK(store::FileStore::decode(magic).ok() == false);
  CHECK(store::FileStore::decode(store::FileStore::encode("")).ok());
}

TEST_CASE("keys and kinds are plain names") {
  CHECK(store::valid_key("echo"));
  CHECK(store::valid_key("my-fn.v2_x"));
  CHECK_FALSE(store::valid_key(""));
  CHECK_FALSE(store::valid_key(".hidden"));
  CHECK_FALSE(store::valid_key("a/b"));
  CHECK_FALSE(store::valid_key(std::string(201, 'a')));
  CHECK(store::valid_kind("function"));
  CHECK_FALSE(store::valid_kind("Function"));
  CHECK_FALSE(store::valid_kind("../x"));
}

TEST_CASE("a put is reported done later, from the loop, and a new store on the directory loads it") {
  Fixture f;
  {
    auto s = f.open();
    int calls = 0;
    Status seen = plain_error("not called");
    REQUIRE(s->put("function", "echo", "v1", [&](Status st) { ++calls; seen = st; }).ok());
    CHECK(calls == 0);  // never from inside put
    CHECK_FALSE(s->idle());
    f.drain(*s);
    CHECK(calls == 1);
    CHECK(seen.ok());
    CHECK(s->stats().puts == 1);
  }
  struct stat st{};
  REQUIRE(stat(f.dir().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  auto s = f.open();
  auto r = s->load_all();
  REQUIRE(r.ok());
  CHECK(Fixture::as_map(*r) == std::map<std::string, std::string>{{"function/echo", "v1"}});
}

TEST_CASE("changes to one key become durable in issue order; different keys are independent") {
  Fixture f;
  store::FileStoreOptions o;
  o.max_in_flight = 2;
  auto s = f.open(o);
  std::vector<std::string> order;
  auto note = [&](std::string what) { return [&order, what](Status st) { CHECK(st.ok()); order.push_back(what); }; };
  REQUIRE(s->put("function", "a", "1", note("a1")).ok());
  REQUIRE(s->put("function", "a", "2", note("a2")).ok());
  REQUIRE(s->remove("function", "a", note("a-rm")).ok());
  REQUIRE(s->put("function", "a", "3", note("a3")).ok());
  for (int i = 0; i < 20; ++i) REQUIRE(s->put("scale", "k" + std::to_string(i), std::to_string(i), note("k")).ok());
  REQUIRE(s->remove("scale", "k5", note("k5-rm")).ok());
  REQUIRE(s->remove("secret", "never-there", note("absent-rm")).ok());  // removing nothing is fine
  f.drain(*s);
  CHECK(order.size() == 26);
  std::vector<std::string> a_order;
  for (const auto &o2 : order)
    if (o2[0] == 'a' && o2 != "absent-rm") a_order.push_back(o2);
  CHECK(a_order == std::vector<std::string>{"a1", "a2", "a-rm", "a3"});
  auto r = s->load_all();
  REQUIRE(r.ok());
  auto m = Fixture::as_map(*r);
  CHECK(m["function/a"] == "3");
  CHECK(m.count("scale/k5") == 0);
  CHECK(m["scale/k19"] == "19");
  CHECK(m.size() == 20);
}

TEST_CASE("done may issue the next change") {
  Fixture f;
  auto s = f.open();
  int chain = 0;
  std::function<void(Status)> next = [&](Status st) {
    CHECK(st.ok());
    if (++chain < 5) REQUIRE(s->put("call", "c", std::to_string(chain), next).ok());
  };
  REQUIRE(s->put("call", "c", "0", next).ok());
  f.drain(*s);
  CHECK(chain == 5);
  auto m = Fixture::as_map(*s->load_all());
  CHECK(m["call/c"] == "4");
}

TEST_CASE("loading removes temp files of interrupted writes and skips corrupt records") {
  Fixture f;
  {
    auto s = f.open();
    REQUIRE(s->put("function", "good", "payload", [](Status st) { CHECK(st.ok()); }).ok());
    f.drain(*s);
  }
  std::ofstream(f.dir() + "/function/.half.tmp") << "FVR1 half a rec";
  std::ofstream(f.dir() + "/function/bad") << "FVR1garbage-with-no-valid-length";
  std::string truncated = store::FileStore::encode("a long enough value");
  truncated.resize(truncated.size() - 3);
  std::ofstream(f.dir() + "/secret/cut") << truncated;
  auto s = f.open();
  auto r = s->load_all();
  REQUIRE(r.ok());
  CHECK(Fixture::as_map(*r) == std::map<std::string, std::string>{{"function/good", "payload"}});
  CHECK(r->temp_removed == 1);
  CHECK(r->skipped == 2);
  CHECK_FALSE(fs::exists(f.dir() + "/function/.half.tmp"));
}

TEST_CASE("a second store on the same directory is refused while the first holds it") {
  Fixture f;
  auto first = f.open();
  store::FileStoreOptions o;
  o.dir = f.dir();
  auto second = store::FileStore::open(*f.ring, o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().message().find("another node") != std::string::npos);
  first.reset();
  CHECK(store::FileStore::open(*f.ring, o).ok());
}

TEST_CASE("changes beyond the queue limit are refused at once; bad kinds and keys too") {
  Fixture f;
  store::FileStoreOptions o;
  o.max_in_flight = 1;
  o.max_queued = 3;
  auto s = f.open(o);
  int done = 0;
  for (int i = 0; i < 3; ++i) REQUIRE(s->put("function", "f" + std::to_string(i), "x", [&](Status) { ++done; }).ok());
  Status refused = s->put("function", "f9", "x", [&](Status) { ++done; });
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().errno_value == EAGAIN);
  CHECK_FALSE(s->put("nosuchkind", "k", "x", [&](Status) { ++done; }).ok());
  CHECK_FALSE(s->put("function", "../etc", "x", [&](Status) { ++done; }).ok());
  f.drain(*s);
  CHECK(done == 3);
  CHECK(s->stats().refused == 1);
}

TEST_CASE("a DurableOp reports a failed write and leaves no temp file") {
  Fixture f;
  std::string d = f.tmp.path + "/gone";
  REQUIRE(mkdir(d.c_str(), 0700) == 0);
  int dir_fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(dir_fd >= 0);
  REQUIRE(rmdir(d.c_str()) == 0);  // creating a file in a deleted directory fails: ENOENT
  struct Owner {
    int calls = 0;
    Status status;
  } owner;
  store::DurableOp op;
  op.owner = &owner;
  op.callback = [](store::DurableOp &o, Status st) {
    auto &w = o.owner_as<Owner>();
    ++w.calls;
    w.status = st;
  };
  op.write(*f.ring, dir_fd, "rec", "bytes");
  while (op.busy()) f.ring->run_once();
  CHECK(owner.calls == 1);
  REQUIRE_FALSE(owner.status.ok());
  CHECK(owner.status.error().errno_value == ENOENT);
  ::close(dir_fd);
}

TEST_CASE("a DurableOp write replaces the file whole and a remove deletes it") {
  Fixture f;
  std::string d = f.tmp.path + "/d";
  REQUIRE(mkdir(d.c_str(), 0700) == 0);
  int dir_fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int calls = 0;
  store::DurableOp op;
  op.owner = &calls;
  op.callback = [](store::DurableOp &o, Status st) {
    CHECK(st.ok());
    ++o.owner_as<int>();
  };
  std::string big(300000, 'z');
  op.write(*f.ring, dir_fd, "rec", big);
  while (op.busy()) f.ring->run_once();
  std::ifstream in(d + "/rec");
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == big);
  CHECK_FALSE(fs::exists(d + "/.rec.tmp"));
  op.remove(*f.ring, dir_fd, "rec");
  while (op.busy()) f.ring->run_once();
  CHECK_FALSE(fs::exists(d + "/rec"));
  CHECK(calls == 2);
  ::close(dir_fd);
}

TEST_CASE("the memory store answers on the next loop turn and keeps nothing past the process") {
  std::unique_ptr<io::Ring> ring{*io::Ring::create(16)};
  store::MemoryStore s(*ring);
  int calls = 0;
  REQUIRE(s.put("function", "x", "1", [&](Status st) { CHECK(st.ok()); ++calls; }).ok());
  CHECK(calls == 0);
  while (!s.idle()) ring->run_once();
  CHECK(calls == 1);
  CHECK_FALSE(s.durable());
  CHECK(s.load_all()->records.size() == 1);
}

TEST_CASE("a function record keeps the deploy body, generation and resolved image exactly") {
  FunctionRecord r;
  r.generation = 7;
  r.deploy_json = R"({"service":"x","envVars":{"A":"quote \" and \\ newline \n"}})";
  r.image_json = R"({"digest":"sha256:ab","rootfs":"/r","Env":["A=1"]})";
  auto back = decode_function_record(encode_function_record(r));
  REQUIRE(back.ok());
  CHECK(back->generation == 7);
  CHECK(back->deploy_json == r.deploy_json);
  CHECK(back->image_json == r.image_json);
  r.image_json.clear();
  back = decode_function_record(encode_function_record(r));
  REQUIRE(back.ok());
  CHECK(back->image_json.empty());
  CHECK_FALSE(decode_function_record("{\"deploy\":\"{}\"}").ok());       // no generation
  CHECK_FALSE(decode_function_record("{\"generation\":1}").ok());        // no body
  CHECK_FALSE(decode_function_record("{\"generation\":1,\"deploy\":").ok());
  CHECK(*decode_scale_record(encode_scale_record(12)) == 12);
  CHECK_FALSE(decode_scale_record("-1").ok());
  CHECK_FALSE(decode_scale_record("").ok());
}
