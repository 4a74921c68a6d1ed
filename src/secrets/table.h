// The node's secrets (docs/secrets.md): name -> value, as durable in the store, plus the
// changes under way. Functions name secrets at deploy ("secrets": [names]); each backend
// gives a new instance the values of that moment (resolve), never a value that was not yet
// acknowledged: a change enters the table only once the store has made it durable.
//
// Values are never logged or put in an error message; only names are.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"

namespace faasvisor::secrets {

void wipe(std::string &value);  // overwrites a value before its memory is released

// A copy of a value on its way into an instance; wiped when it goes.
struct SecretValue {
  std::string name;
  std::string value;
  SecretValue(std::string n, std::string v) : name(std::move(n)), value(std::move(v)) {}
  SecretValue(const SecretValue &) = default;
  SecretValue(SecretValue &&) = default;
  SecretValue &operator=(const SecretValue &) = default;
  SecretValue &operator=(SecretValue &&) = default;
  ~SecretValue() { wipe(value); }
};

enum class Change { create, update, remove };

class SecretTable {
 public:
  SecretTable() = default;
  SecretTable(const SecretTable &) = delete;
  SecretTable &operator=(const SecretTable &) = delete;
  ~SecretTable();

  const std::string *find(std::string_view name) const;
  size_t size() const { return values_.size(); }
  std::vector<std::string> names() const;  // sorted
  void set(std::string_view name, std::string value);
  void erase(std::string_view name);

  // A change to a name issued to the store and not yet durable. One at a time per name: a
  // second change meets a 409 until the first is answered.
  const Change *changing(std::string_view name) const;
  void begin_change(std::string_view name, Change change);
  void end_change(std::string_view name);

  // Whether a function may name these secrets (deploy, update): each exists and is not being
  // deleted, none twice, and their values fit FV_SECRETS_VALUES_MAX together.
  Status check_function(const std::vector<std::string> &names) const;
  // The total size of names' values, with `replaced` counted as `replaced_bytes` instead.
  uint64_t total_bytes(const std::vector<std::string> &names, std::string_view replaced = {},
                       uint64_t replaced_bytes = 0) const;
  // The values of names now, for an instance that is starting.
  Result<std::vector<SecretValue>> resolve(const std::vector<std::string> &names) const;

 private:
  std::map<std::string, std::string, std::less<>> values_;
  std::map<std::string, Change, std::less<>> changing_;
};

}  // namespace faasvisor::secrets
