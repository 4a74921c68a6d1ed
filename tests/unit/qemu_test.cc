// The VM backends' pure parts: the fvspec= encoding the guest agent decodes, --accel.
#include "backend/qemu.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using faasvisor::backend::AccelChoice;
using faasvisor::backend::encode_vm_spec;
using faasvisor::backend::parse_accel;

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// As src/vm/vminit.c decodes it: %XX escapes, everything else literal.
std::string decode(const std::string &s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("fvspec: argv, an empty entry, the environment; nothing the kernel would split") {
  std::vector<std::string> argv = {"/misbehave", "a b", "100%", "quote\"d"};
  std::vector<std::string> env = {"A=1", "SPACE=x y", "UTF8=\xc3\xa9", "EMPTY="};
  std::string enc = encode_vm_spec(argv, env);
  for (char c : enc) {
    CHECK(c != ' ');
    CHECK(c != '"');
    CHECK(c != '\n');
    CHECK(static_cast<unsigned char>(c) < 0x80);
  }
  std::string want;
  for (const auto &a : argv) want += a + '\0';
  want += '\0';
  for (const auto &e : env) want += e + '\0';
  CHECK(decode(enc) == want);
  CHECK(encode_vm_spec({"/echo"}, {}) == "/echo%00%00");
}

TEST_CASE("--accel") {
  CHECK(*parse_accel("auto") == AccelChoice::automatic);
  CHECK(*parse_accel("kvm") == AccelChoice::kvm);
  CHECK(*parse_accel("tcg") == AccelChoice::tcg);
  CHECK(!parse_accel("hvf"));
  CHECK(!parse_accel(""));
}
