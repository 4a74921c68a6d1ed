// SHA-256 used by examples/hash, checked against the FIPS 180-2 test vectors.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "../../examples/hash/sha256.h"

namespace {

std::string hex_digest(std::string_view data) {
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256(data.data(), data.size(), digest);
  char hex[2 * SHA256_DIGEST_SIZE];
  sha256_hex(digest, hex);
  return std::string(hex, sizeof hex);
}

}  // namespace

TEST_CASE("sha256 of \"abc\" matches FIPS 180-2 appendix B.1") {
  CHECK(hex_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("sha256 of the empty string matches the known digest") {
  CHECK(hex_digest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("sha256 of the 448-bit two-block message matches FIPS 180-2 appendix B.2") {
  CHECK(hex_digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("sha256 of one million 'a' matches FIPS 180-2 appendix B.3") {
  CHECK(hex_digest(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 fed in pieces at every split point equals the one-shot digest") {
  std::string msg;
  for (int i = 0; i < 200; i++) msg.push_back(static_cast<char>('a' + i % 26));
  uint8_t expected[SHA256_DIGEST_SIZE];
  sha256(msg.data(), msg.size(), expected);
  for (size_t split = 0; split <= msg.size(); split++) {
    struct sha256 ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, msg.data(), split);
    sha256_update(&ctx, msg.data() + split, msg.size() - split);
    uint8_t got[SHA256_DIGEST_SIZE];
    sha256_final(&ctx, got);
    CHECK(std::string_view(reinterpret_cast<char *>(got), sizeof got) ==
          std::string_view(reinterpret_cast<char *>(expected), sizeof expected));
  }
}

TEST_CASE("sha256 handles messages whose padding spills into an extra block (55, 56, 64 bytes)") {
  // Digests computed independently (coreutils sha256sum) for runs of 'a'.
  CHECK(hex_digest(std::string(55, 'a')) ==
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(hex_digest(std::string(56, 'a')) ==
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(hex_digest(std::string(64, 'a')) ==
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}
