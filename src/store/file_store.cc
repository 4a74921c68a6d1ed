#include "store/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "util/log.h"

namespace faasvisor::store {
namespace {

constexpr char kMagic[4] = {'F', 'V', 'R', '1'};
constexpr size_t kHeaderBytes = 12;

uint32_t crc32(std::string_view data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put_u32(std::string &out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint32_t get_u32(const char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// mkdir -p with `mode` for the last component and 0755 for the parents.
Status make_dirs(const std::string &path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    bool last = pos == path.size();
    if (mkdir(part.c_str(), last ? mode : 0755) != 0 && errno != EEXIST)
      return Error{errno, "create state directory", part};
  }
  return {};
}

// Reads a whole regular file with plain syscalls: load_all runs before the loop serves.
Result<std::string> read_file_at(int dir_fd, const char *name, uint32_t max_bytes) {
  int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno_error("open record");
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return plain_error("record", "not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes + kHeaderBytes) {
    ::close(fd);
    return plain_error("record", "larger than the record limit");
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes.resize(got);
  return bytes;
}

}  // namespace

struct FileStore::Change {
  FileStore *store = nullptr;
  Chain *chain = nullptr;
  bool is_remove = false;
  std::string value;
  Done done;
  DurableOp op;
};

struct FileStore::Chain {
  std::string id;  // "kind/key", the map key
  size_t kind_index = 0;
  std::string key;
  std::deque<std::unique_ptr<Change>> changes;
  bool running = false;
};

FileStore::FileStore(io::Ring &ring, FileStoreOptions options) : ring_(ring), options_(std::move(options)) {}

FileStore::~FileStore() {
  assert(idle() && "FileStore destroyed with changes in flight");
  for (int fd : kind_fds_) ::close(fd);
  if (dir_fd_ >= 0) ::close(dir_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<FileStore>> FileStore::open(io::Ring &ring, FileStoreOptions options) {
  if (options.dir.empty() || options.dir[0] != '/')
    return plain_error("state directory", "must be an absolute path, not '" + options.dir + "'");
  while (options.dir.size() > 1 && options.dir.back() == '/') options.dir.pop_back();
  for (const std::string &k : options.kinds)
    if (!valid_kind(k)) return plain_error("state directory", "bad record kind '" + k + "'");
  std::unique_ptr<FileStore> s(new FileStore(ring, std::move(options)));
  const std::string &dir = s->options_.dir;
  if (Status st = make_dirs(dir, 0700); !st.ok()) return st.error();
  s->dir_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->dir_fd_ < 0) return Error{errno, "open state directory", dir};
  // The state may hold secrets: only the node's user may look in.
  if (fchmod(s->dir_fd_, 0700) != 0) return Error{errno, "chmod 0700 state directory", dir};
  s->lock_fd_ = openat(s->dir_fd_, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd_ < 0) return Error{errno, "create state directory lock", dir + "/lock"};
  if (flock(s->lock_fd_, LOCK_EX | LOCK_NB) != 0)
    return Error{errno, "lock state directory (is another node using it?)", dir};
  bool created = false;
  for (const std::string &k : s->options_.kinds) {
    if (mkdirat(s->dir_fd_, k.c_str(), 0700) == 0) created = true;
    else if (errno != EEXIST) return Error{errno, "create state directory", dir + "/" + k};
    int fd = openat(s->dir_fd_, k.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return Error{errno, "open state directory", dir + "/" + k};
    s->kind_fds_.push_back(fd);
  }
  // New kind directories must survive a crash before a record in them is acknowledged.
  if (created && fsync(s->dir_fd_) != 0) return Error{errno, "fsync state directory", dir};
  return s;
}

std::string FileStore::encode(std::string_view payload) {
  std::string out;
  out.reserve(kHeaderBytes + payload.size());
  out.append(kMagic, sizeof kMagic);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, crc32(payload));
  out.append(payload);
  return out;
}

Result<std::string> FileStore::decode(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) return plain_error("record", "shorter than its header");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return plain_error("record", "bad magic");
  uint32_t length = get_u32(bytes.data() + 4);
  if (length != bytes.size() - kHeaderBytes)
    return plain_error("record", "length " + std::to_string(length) + " but " +
                                     std::to_string(bytes.size() - kHeaderBytes) + " payload bytes");
  std::string_view payload = bytes.substr(kHeaderBytes);
  if (crc32(payload) != get_u32(bytes.data() + 8)) return plain_error("record", "checksum mismatch");
  return std::string(payload);
}

Result<LoadReport> FileStore::load_all() {
  LoadReport report;
  for (size_t i = 0; i < options_.kinds.size(); ++i) {
    const std::string &kind = options_.kinds[i];
    int fd = dup(kind_fds_[i]);
    DIR *d = fd >= 0 ? fdopendir(fd) : nullptr;
    if (d == nullptr) {
      if (fd >= 0) ::close(fd);
      return Error{errno, "read state directory", options_.dir + "/" + kind};
    }
    rewinddir(d);
    while (dirent *e = readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (name[0] == '.') {
        // A write a crash interrupted before its rename: never read, removed.
        if (unlinkat(kind_fds_[i], e->d_name, 0) == 0) ++report.temp_removed;
        continue;
      }
      if (!valid_key(name)) {
        FV_WARN("state: skipping %s/%s/%s: not a record name", options_.dir.c_str(), kind.c_str(), e->d_name);
        ++report.skipped;
        continue;
      }
      auto bytes = read_file_at(kind_fds_[i], e->d_name, options_.max_record_bytes);
      Result<std::string> payload = bytes ? decode(*bytes) : Result<std::string>(bytes.error());
      if (!payload) {
        FV_WARN("state: skipping %s/%s/%s: %s", options_.dir.c_str(), kind.c_str(), e->d_name,
                payload.error().message().c_str());
        ++report.skipped;
        continue;
      }
      report.records.push_back(Record{kind, std::string(name), std::move(*payload)});
    }
    closedir(d);
  }
  return report;
}

Status FileStore::put(std::string_view kind, std::string_view key, std::string value, Done done) {
  if (value.size() > options_.max_record_bytes)
    return Error{EFBIG, "store record", "value of " + std::to_string(value.size()) + " bytes"};
  return issue(kind, key, false, encode(value), std::move(done));
}

Status FileStore::remove(std::string_view kind, std::string_view key, Done done) {
  return issue(kind, key, true, {}, std::move(done));
}

Status FileStore::issue(std::string_view kind, std::string_view key, bool is_remove, std::string value,
                        Done done) {
  assert(done);
  size_t kind_index = options_.kinds.size();
  for (size_t i = 0; i < options_.kinds.size(); ++i)
    if (options_.kinds[i] == kind) kind_index = i;
  if (kind_index == options_.kinds.size()) return plain_error("store", "unknown record kind '" + std::string(kind) + "'");
  if (!valid_key(key)) return plain_error("store", "bad record key '" + std::string(key) + "'");
  if (stats_.queued_now >= options_.max_queued) {
    ++stats_.refused;
    return Error{EAGAIN, "store", std::to_string(stats_.queued_now) + " changes already waiting to be durable"};
  }
  std::string id = std::string(kind) + "/" + std::string(key);
  auto &slot = chains_[id];
  if (!slot) {
    slot = std::make_unique<Chain>();
    slot->id = id;
    slot->kind_index = kind_index;
    slot->key = std::string(key);
  }
  Chain &chain = *slot;
  auto change = std::make_unique<Change>();
  change->store = this;
  change->chain = &chain;
  change->is_remove = is_remove;
  change->value = std::move(value);
  change->done = std::move(done);
  change->op.owner = change.get();
  change->op.callback = &FileStore::on_durable;
  chain.changes.push_back(std::move(change));
  ++stats_.queued_now;
  if (chain.changes.size() == 1) {
    if (in_flight_ < options_.max_in_flight) start(chain);
    else waiting_.push_back(&chain);
  }
  return {};
}

void FileStore::start(Chain &chain) {
  assert(!chain.running && !chain.changes.empty());
  chain.running = true;
  ++in_flight_;
  Change &change = *chain.changes.front();
  int dir_fd = kind_fds_[chain.kind_index];
  if (change.is_remove) change.op.remove(ring_, dir_fd, chain.key);
  else change.op.write(ring_, dir_fd, chain.key, std::move(change.value));
}

void FileStore::start_waiting() {
  while (in_flight_ < options_.max_in_flight && !waiting_.empty()) {
    Chain *chain = waiting_.front();
    waiting_.pop_front();
    start(*chain);
  }
}

void FileStore::on_durable(DurableOp &op, Status status) {
  Change &change = op.owner_as<Change>();
  FileStore &self = *change.store;
  Chain &chain = *change.chain;
  assert(chain.running && chain.changes.front().get() == &change);
  // Take the change off its chain and settle the store's books before calling done, which
  // may issue more changes.
  std::unique_ptr<Change> owned = std::move(chain.changes.front());
  chain.changes.pop_front();
  chain.running = false;
  --self.in_flight_;
  --self.stats_.queued_now;
  if (!status.ok()) {
    ++self.stats_.failed;
    FV_ERROR("state: %s %s: %s", owned->is_remove ? "remove" : "write", chain.id.c_str(),
             status.error().message().c_str());
  } else if (owned->is_remove) {
    ++self.stats_.removes;
  } else {
    ++self.stats_.puts;
  }
  if (chain.changes.empty()) {
    self.chains_.erase(self.chains_.find(chain.id));  // frees the chain
  } else {
    self.waiting_.push_back(&chain);
  }
  self.start_waiting();
  Done done = std::move(owned->done);
  // `owned` (and the op whose callback this is) is freed here, after its last CQE.
  owned.reset();
  done(std::move(status));
}

}  // namespace faasvisor::store
