#include "api/auth.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "util/base64.h"

namespace faasvisor::api {
namespace {

// The files are a few bytes; a bigger one is not a credential.
constexpr size_t kMaxCredentialBytes = 4096;

std::string_view trim_space(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

Result<std::string> read_credential(const std::string &path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{errno, "cannot read the basic auth file", path};
  std::string data;
  char buf[1024];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return Error{err, "cannot read the basic auth file", path};
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxCredentialBytes) {
      close(fd);
      return plain_error("basic auth file too large", path);
    }
  }
  close(fd);
  std::string_view value = trim_space(data);
  if (value.empty()) return plain_error("basic auth file is empty", path);
  return std::string(value);
}

// Constant time in the content of `given`: every byte of `expected` is compared whatever
// came before, and a length mismatch is folded into the same accumulator.
bool constant_time_equal(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= g ^ static_cast<unsigned char>(expected[i]);
  }
  return diff == 0;
}

bool iequals_ascii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

}  // namespace

Result<BasicAuthCredentials> read_basic_auth(const std::string &dir) {
  BasicAuthCredentials out;
  auto user = read_credential(dir + "/basic-auth-user");
  if (!user) return user.error();
  auto password = read_credential(dir + "/basic-auth-password");
  if (!password) return password.error();
  out.user = std::move(*user);
  out.password = std::move(*password);
  return out;
}

bool basic_auth_matches(std::string_view authorization, const BasicAuthCredentials &expected) {
  constexpr std::string_view kScheme = "Basic ";
  if (authorization.size() < kScheme.size() || !iequals_ascii(authorization.substr(0, kScheme.size()), kScheme))
    return false;
  auto decoded_or = base64_decode(authorization.substr(kScheme.size()));
  if (!decoded_or) return false;
  std::string &decoded = *decoded_or;
  size_t colon = decoded.find(':');
  if (colon == std::string::npos) return false;
  std::string_view view = decoded;
  // Both halves are always compared: no early exit on a wrong user.
  bool user_ok = constant_time_equal(view.substr(0, colon), expected.user);
  bool password_ok = constant_time_equal(view.substr(colon + 1), expected.password);
  return user_ok & password_ok;
}

bool path_needs_auth(std::string_view path, bool protect_metrics) {
  if (path == "/system" || path.starts_with("/system/")) return true;
  return protect_metrics && path == "/metrics";
}

}  // namespace faasvisor::api
