// A small result type for the loop path: a value, or an errno with a static context
// string. No exceptions on the loop path (STYLE.md 7).
#pragma once

#include <cassert>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace faasvisor {

struct Error {
  int errno_value = 0;          // positive errno, or 0 for a non-system error
  const char *context = "";     // static string: what was being done
  std::string detail;           // optional dynamic detail (owned)

  std::string message() const {
    std::string out = context;
    if (!detail.empty()) {
      out += ": ";
      out += detail;
    }
    if (errno_value != 0) {
      out += ": ";
      out += std::strerror(errno_value);
    }
    return out;
  }
};

inline Error errno_error(const char *context, int err = errno) { return Error{err, context, {}}; }
inline Error plain_error(const char *context, std::string detail = {}) {
  return Error{0, context, std::move(detail)};
}

template <typename T>
class Result {
 public:
  Result(T value) : ok_(true), value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : ok_(false), error_(std::move(error)) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  T &value() { assert(ok_); return value_; }
  T &operator*() { return value(); }
  T *operator->() { return &value(); }
  const Error &error() const { assert(!ok_); return error_; }

 private:
  bool ok_;
  T value_{};
  Error error_{};
};

// Result<void>
template <>
class Result<void> {
 public:
  Result() : ok_(true) {}
  Result(Error error) : ok_(false), error_(std::move(error)) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error &error() const { assert(!ok_); return error_; }

 private:
  bool ok_;
  Error error_{};
};

using Status = Result<void>;

}  // namespace faasvisor
