#include "secrets/table.h"

#include <algorithm>

#include "faasvisor/frame.h"

namespace faasvisor::secrets {

void wipe(std::string &value) {
  // volatile: the stores must happen although the string is about to be freed.
  volatile char *p = value.data();
  for (size_t i = 0; i < value.size(); ++i) p[i] = 0;
  value.clear();
}

SecretTable::~SecretTable() {
  for (auto &[name, value] : values_) wipe(value);
}

const std::string *SecretTable::find(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

std::vector<std::string> SecretTable::names() const {
  std::vector<std::string> out;
  out.reserve(values_.size());
  for (const auto &[name, value] : values_) out.push_back(name);
  return out;
}

void SecretTable::set(std::string_view name, std::string value) {
  auto it = values_.find(name);
  if (it == values_.end()) {
    values_.emplace(std::string(name), std::move(value));
    return;
  }
  wipe(it->second);
  it->second = std::move(value);
}

void SecretTable::erase(std::string_view name) {
  auto it = values_.find(name);
  if (it == values_.end()) return;
  wipe(it->second);
  values_.erase(it);
}

const Change *SecretTable::changing(std::string_view name) const {
  auto it = changing_.find(name);
  return it == changing_.end() ? nullptr : &it->second;
}

void SecretTable::begin_change(std::string_view name, Change change) {
  changing_.insert_or_assign(std::string(name), change);
}

void SecretTable::end_change(std::string_view name) {
  auto it = changing_.find(name);
  if (it != changing_.end()) changing_.erase(it);
}

uint64_t SecretTable::total_bytes(const std::vector<std::string> &names, std::string_view replaced,
                                  uint64_t replaced_bytes) const {
  uint64_t total = 0;
  for (const std::string &name : names) {
    if (!replaced.empty() && name == replaced) {
      total += replaced_bytes;
    } else if (const std::string *value = find(name)) {
      total += value->size();
    }
  }
  return total;
}

Status SecretTable::check_function(const std::vector<std::string> &names) const {
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string &name = names[i];
    if (std::find(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), name) != names.begin() + static_cast<std::ptrdiff_t>(i))
      return plain_error("invalid deployment", "field 'secrets': '" + name + "' is named twice");
    const Change *change = changing(name);
    if (find(name) == nullptr || (change != nullptr && *change == Change::remove))
      return plain_error("invalid deployment",
                         "field 'secrets': no secret named '" + name +
                             (change != nullptr ? "' (it is being deleted)" : "' (create it with POST /system/secrets)"));
  }
  uint64_t total = total_bytes(names);
  if (total > FV_SECRETS_VALUES_MAX)
    return plain_error("invalid deployment",
                       "field 'secrets': their values take " + std::to_string(total) +
                           " bytes together, more than the limit of " +
                           std::to_string(FV_SECRETS_VALUES_MAX) + " per function");
  return {};
}

Result<std::vector<SecretValue>> SecretTable::resolve(const std::vector<std::string> &names) const {
  std::vector<SecretValue> out;
  out.reserve(names.size());
  for (const std::string &name : names) {
    const std::string *value = find(name);
    if (value == nullptr) return plain_error("the function's secret no longer exists", name);
    out.push_back({name, *value});
  }
  return out;
}

}  // namespace faasvisor::secrets
