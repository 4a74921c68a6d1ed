#include "store/store.h"

#include <cassert>

namespace faasvisor::store {

std::vector<std::string> default_kinds() {
  return {std::string(kind::function), std::string(kind::secret), std::string(kind::scale),
          std::string(kind::call)};
}

bool valid_key(std::string_view key) {
  if (key.empty() || key.size() > 200 || key[0] == '.') return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool valid_kind(std::string_view kind) {
  if (kind.empty() || kind.size() > 32 || kind[0] < 'a' || kind[0] > 'z') return false;
  for (char c : kind)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

MemoryStore::MemoryStore(io::Ring &ring, std::vector<std::string> kinds) : ring_(ring), kinds_(std::move(kinds)) {
  nop_.owner = this;
  nop_.callback = &MemoryStore::on_nop;
}

MemoryStore::~MemoryStore() { assert(idle() && "MemoryStore destroyed with changes in flight"); }

Result<LoadReport> MemoryStore::load_all() {
  LoadReport report;
  for (const auto &[id, value] : records_) report.records.push_back(Record{id.first, id.second, value});
  return report;
}

Status MemoryStore::check(std::string_view kind, std::string_view key) const {
  bool known = false;
  for (const std::string &k : kinds_) known = known || k == kind;
  if (!known) return plain_error("store", "unknown record kind '" + std::string(kind) + "'");
  if (!valid_key(key)) return plain_error("store", "bad record key '" + std::string(key) + "'");
  return {};
}

Status MemoryStore::put(std::string_view kind, std::string_view key, std::string value, Done done) {
  if (Status st = check(kind, key); !st.ok()) return st;
  records_[{std::string(kind), std::string(key)}] = std::move(value);
  pending_.emplace_back(std::move(done), false);
  ++stats_.queued_now;
  if (!nop_.in_flight) ring_.nop(nop_);
  return {};
}

Status MemoryStore::remove(std::string_view kind, std::string_view key, Done done) {
  if (Status st = check(kind, key); !st.ok()) return st;
  records_.erase({std::string(kind), std::string(key)});
  pending_.emplace_back(std::move(done), true);
  ++stats_.queued_now;
  if (!nop_.in_flight) ring_.nop(nop_);
  return {};
}

void MemoryStore::on_nop(io::Completion &c, int, uint32_t) {
  auto &self = c.owner_as<MemoryStore>();
  // Changes issued from inside these callbacks wait for the next NOP.
  std::vector<std::pair<Done, bool>> batch;
  batch.swap(self.pending_);
  self.stats_.queued_now -= batch.size();
  for (auto &[done, was_remove] : batch) {
    ++(was_remove ? self.stats_.removes : self.stats_.puts);
    done(Status{});
  }
}

}  // namespace faasvisor::store
