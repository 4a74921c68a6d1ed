#include "image/unpack.h"

#include "image/peer_fetch.h"
#include "image/pull.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <unordered_set>
#include <vector>
#include <algorithm>
#include <csignal>

#include "sha256.h"

namespace faasvisor::image {
namespace {

constexpr size_t kReadChunk = 128 * 1024;

// An owned file descriptor.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd &&o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  bool ok() const { return fd >= 0; }
};

std::string hex_of(struct sha256 &ctx) {
  uint8_t digest[SHA256_DIGEST_SIZE];
  char hex[2 * SHA256_DIGEST_SIZE];
  sha256_final(&ctx, digest);
  sha256_hex(digest, hex);
  return std::string(hex, sizeof hex);
}

// Opens `path` (relative, "" for the directory itself) below dirfd; fails with EXDEV if
// resolving it would leave dirfd, through "..", an absolute path or any symlink doing so.
int open_beneath(int dirfd, const std::string &path, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path.empty() ? "." : path.c_str(), &how, sizeof how));
}

Error entry_error(std::string_view path, const char *why, int err = 0) {
  return Error{err, "layer entry refused", "'" + std::string(path) + "' " + why};
}

// Opens the directory `dir` below root, making the missing ones (mode 0755), each step
// resolved beneath the root.
Result<Fd> make_dirs(int root_fd, const std::string &dir, std::string_view entry) {
  Fd fd(open_beneath(root_fd, dir, O_PATH | O_DIRECTORY));
  if (fd.ok()) return fd;
  if (errno == EXDEV || errno == ELOOP) return entry_error(entry, "would be written through a symlink that leaves the image root");
  if (errno != ENOENT) return entry_error(entry, "has a parent that cannot be opened", errno);
  Fd parent(open_beneath(root_fd, "", O_PATH | O_DIRECTORY));
  std::string prefix;
  for (std::string_view part : split_on(dir, '/')) {
    std::string name(part);
    prefix += (prefix.empty() ? "" : "/") + name;
    Fd next(open_beneath(root_fd, prefix, O_PATH | O_DIRECTORY));
    if (!next.ok() && errno == ENOENT) {
      if (mkdirat(parent.fd, name.c_str(), 0755) < 0 && errno != EEXIST)
        return entry_error(entry, "needs a directory that cannot be made", errno);
      next = Fd(open_beneath(root_fd, prefix, O_PATH | O_DIRECTORY));
    }
    if (!next.ok()) {
      if (errno == EXDEV || errno == ELOOP) return entry_error(entry, "would be written through a symlink that leaves the image root");
      return entry_error(entry, "has a parent that is not a directory", errno);
    }
    parent = std::move(next);
  }
  return parent;
}

Status remove_at(int dirfd, const char *name);

// Removes everything inside the directory fd, never following a symlink.
Status empty_dir(int fd, const std::unordered_set<std::string> *keep, const std::string &prefix) {
  Fd reopened(openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));  // a listing of its own
  if (!reopened.ok()) return errno_error("open directory");
  DIR *d = fdopendir(reopened.fd);
  if (d == nullptr) return errno_error("fdopendir");
  reopened.fd = -1;  // owned by d
  std::vector<std::string> names;
  while (dirent *e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    std::string path = prefix.empty() ? e->d_name : prefix + "/" + e->d_name;
    if (keep != nullptr && keep->count(path) != 0) continue;
    names.emplace_back(e->d_name);
  }
  Status st;
  for (const std::string &name : names)
    if (st = remove_at(dirfd(d), name.c_str()); !st.ok()) break;
  closedir(d);
  return st;
}

Status remove_at(int dirfd, const char *name) {
  struct stat st{};
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno == ENOENT ? Status{} : errno_error("stat", errno);
  if (S_ISDIR(st.st_mode)) {
    Fd fd(openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.ok()) return errno_error("open directory");
    if (Status s = empty_dir(fd.fd, nullptr, {}); !s.ok()) return s;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0) return errno_error("rmdir");
    return {};
  }
  if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) return errno_error("unlink");
  return {};
}

// libarchive reads the layer through this, so the digest covers exactly the bytes unpacked.
struct HashingReader {
  int fd = -1;
  struct sha256 ctx{};
  uint64_t bytes = 0;
  int read_errno = 0;
  std::vector<char> buffer = std::vector<char>(kReadChunk);
};

la_ssize_t hashing_read(archive *, void *data, const void **out) {
  auto &r = *static_cast<HashingReader *>(data);
  ssize_t n;
  do n = ::read(r.fd, r.buffer.data(), r.buffer.size());
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    r.read_errno = errno;
    return -1;
  }
  sha256_update(&r.ctx, r.buffer.data(), static_cast<size_t>(n));
  r.bytes += static_cast<uint64_t>(n);
  *out = r.buffer.data();
  return n;
}

// Reads what libarchive left unread (tar padding) into the hash, then compares.
Status finish_digest(HashingReader &r, std::string_view digest, uint64_t size, const char *what) {
  const void *ignored = nullptr;
  while (true) {
    la_ssize_t n = hashing_read(nullptr, &r, &ignored);
    if (n < 0) return errno_error("read blob", r.read_errno);
    if (n == 0) break;
  }
  if (digest.empty()) return {};
  std::string hex = hex_of(r.ctx);
  if (hex != digest_hex(digest))
    return plain_error(what, std::string(digest) + " is corrupt: its content hashes to sha256:" + hex);
  if (r.bytes != size)
    return plain_error(what, std::string(digest) + " has " + std::to_string(r.bytes) + " bytes, its descriptor says " +
                                 std::to_string(size));
  return {};
}

struct ArchiveReader {
  archive *a = archive_read_new();
  ~ArchiveReader() { archive_read_free(a); }
};

Result<ArchiveReader *> open_tar(ArchiveReader &ar, HashingReader &r) {
  archive_read_support_filter_gzip(ar.a);
  archive_read_support_filter_zstd(ar.a);
  archive_read_support_format_tar(ar.a);
  if (archive_read_open(ar.a, &r, nullptr, hashing_read, nullptr) != ARCHIVE_OK)
    return plain_error("open archive", archive_error_string(ar.a) ? archive_error_string(ar.a) : "unknown format");
  return &ar;
}

Status write_data(archive *a, int fd, std::string_view path, const UnpackLimits &limits, uint64_t *bytes_used) {
  const void *block = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  while (true) {
    int rc = archive_read_data_block(a, &block, &size, &offset);
    if (rc == ARCHIVE_EOF) return {};
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
      return plain_error("read layer", std::string(path) + ": " + (archive_error_string(a) ? archive_error_string(a) : "?"));
    *bytes_used += size;
    if (*bytes_used > limits.max_bytes)
      return plain_error("image too large", "more than " + std::to_string(limits.max_bytes >> 20) + " MiB of files");
    const char *p = static_cast<const char *>(block);
    while (size > 0) {
      ssize_t n = pwrite(fd, p, size, offset);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return errno_error("write", n < 0 ? errno : EIO);
      p += n;
      offset += n;
      size -= static_cast<size_t>(n);
    }
  }
}

void split_path(const std::string &path, std::string *dir, std::string *base) {
  size_t slash = path.rfind('/');
  *dir = slash == std::string::npos ? std::string() : path.substr(0, slash);
  *base = slash == std::string::npos ? path : path.substr(slash + 1);
}

void remember(std::unordered_set<std::string> &paths, std::string path) {
  while (!path.empty() && paths.insert(path).second) {
    size_t slash = path.rfind('/');
    path = slash == std::string::npos ? std::string() : path.substr(0, slash);
  }
}

Status apply_entry(int root_fd, archive *a, archive_entry *entry, std::unordered_set<std::string> &layer_paths,
                   const UnpackLimits &limits, uint64_t *bytes_used) {
  const char *raw = archive_entry_pathname(entry);
  if (raw == nullptr) return plain_error("layer entry refused", "an entry has no path");
  auto cleaned = clean_entry_path(raw);
  if (!cleaned)
    return Error{0, "layer entry refused", "'" + std::string(raw) + "' escapes the image root (" + cleaned.error().context + ")"};
  const std::string &path = *cleaned;
  if (path.empty()) return {};  // the root itself
  std::string dir, base;
  split_path(path, &dir, &base);

  if (base.rfind(".wh.", 0) == 0) {
    Fd parent(open_beneath(root_fd, dir, O_PATH | O_DIRECTORY));
    if (!parent.ok()) {
      if (errno == EXDEV || errno == ELOOP) return entry_error(raw, "is a whiteout through a symlink that leaves the image root");
      return {};  // nothing below to delete
    }
    if (base == ".wh..wh..opq") {
      Fd readable(open_beneath(root_fd, dir, O_RDONLY | O_DIRECTORY));
      if (!readable.ok()) return errno_error("open directory");
      return empty_dir(readable.fd, &layer_paths, dir);
    }
    std::string victim = base.substr(4);
    if (victim.empty() || victim == "." || victim == "..") return entry_error(raw, "is a whiteout of nothing");
    return remove_at(parent.fd, victim.c_str());
  }

  auto parent = make_dirs(root_fd, dir, raw);
  if (!parent) return parent.error();
  int pfd = parent->fd;
  const char *name = base.c_str();
  uid_t uid = static_cast<uid_t>(archive_entry_uid(entry));
  gid_t gid = static_cast<gid_t>(archive_entry_gid(entry));
  mode_t perm = archive_entry_perm(entry) & 07777;
  remember(layer_paths, path);

  if (const char *link = archive_entry_hardlink(entry)) {
    auto target = clean_entry_path(link);
    if (!target || target->empty()) return entry_error(raw, "is a hard link to a target outside the image root");
    std::string tdir, tbase;
    split_path(*target, &tdir, &tbase);
    Fd tparent(open_beneath(root_fd, tdir, O_PATH | O_DIRECTORY));
    if (!tparent.ok()) return entry_error(raw, "is a hard link whose target's directory leaves the image root or is missing", errno);
    struct stat st{};
    if (fstatat(tparent.fd, tbase.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
      return entry_error(raw, "is a hard link to a missing target", errno);
    if (S_ISDIR(st.st_mode)) return entry_error(raw, "is a hard link to a directory");
    if (Status s = remove_at(pfd, name); !s.ok()) return s;
    if (linkat(tparent.fd, tbase.c_str(), pfd, name, 0) < 0) return entry_error(raw, "cannot be linked", errno);
    return {};
  }

  switch (archive_entry_filetype(entry)) {
    case AE_IFDIR: {
      struct stat st{};
      if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
        if (Status s = remove_at(pfd, name); !s.ok()) return s;
      if (mkdirat(pfd, name, 0700) < 0 && errno != EEXIST) return entry_error(raw, "cannot be made", errno);
      Fd fd(openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd.ok() || fchown(fd.fd, uid, gid) < 0 || fchmod(fd.fd, perm) < 0)
        return entry_error(raw, "cannot be set up", errno);
      return {};
    }
    case AE_IFREG: {
      if (Status s = remove_at(pfd, name); !s.ok()) return s;
      Fd fd(openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd.ok()) return entry_error(raw, "cannot be created", errno);
      if (Status s = write_data(a, fd.fd, path, limits, bytes_used); !s.ok()) return s;
      la_int64_t size = archive_entry_size(entry);
      if (size > 0 && ftruncate(fd.fd, size) < 0) return errno_error("truncate");
      timespec times[2] = {{archive_entry_mtime(entry), 0}, {archive_entry_mtime(entry), 0}};
      if (fchown(fd.fd, uid, gid) < 0 || fchmod(fd.fd, perm) < 0 || futimens(fd.fd, times) < 0)
        return entry_error(raw, "cannot be set up", errno);
      return {};
    }
    case AE_IFLNK: {
      const char *target = archive_entry_symlink(entry);
      if (target == nullptr || *target == '\0') return entry_error(raw, "is a symlink to nothing");
      // Stored as is: inside the container it resolves within the root. Writes through it
      // while unpacking are resolved beneath the root (make_dirs), so it cannot lead out.
      if (Status s = remove_at(pfd, name); !s.ok()) return s;
      if (symlinkat(target, pfd, name) < 0) return entry_error(raw, "cannot be made", errno);
      if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return entry_error(raw, "cannot be set up", errno);
      return {};
    }
    default:
      return {};  // devices, FIFOs, sockets: a container gets its devices from the runtime
  }
}

Result<std::string> read_all(int fd, uint64_t max) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read");
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max) return plain_error("file too large");
    out.append(buf, static_cast<size_t>(n));
  }
}

Fd open_blob(int layout_fd, std::string_view digest) {
  std::string path = "blobs/sha256/" + std::string(digest_hex(digest));
  return Fd(openat(layout_fd, path.c_str(), O_RDONLY | O_CLOEXEC));
}

// A small JSON blob (manifest, config), its digest and size checked.
Result<std::string> read_blob(int layout_fd, const Descriptor &d, const char *what) {
  if (d.size > kMaxJsonBlob) return plain_error(what, "larger than 4 MiB");
  Fd fd = open_blob(layout_fd, d.digest);
  if (!fd.ok()) return Error{errno, what, "blob " + d.digest + " is missing from the layout"};
  auto text = read_all(fd.fd, kMaxJsonBlob);
  if (!text) return plain_error(what, "blob " + d.digest + " is larger than its descriptor says");
  struct sha256 ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, text->data(), text->size());
  std::string hex = hex_of(ctx);
  if (hex != digest_hex(d.digest))
    return plain_error(what, "blob " + d.digest + " is corrupt: its content hashes to sha256:" + hex);
  if (text->size() != d.size)
    return plain_error(what, "blob " + d.digest + " has " + std::to_string(text->size()) + " bytes, its descriptor says " +
                                 std::to_string(d.size));
  return text;
}

Status make_dir(const std::string &path, mode_t mode) {
  if (mkdir(path.c_str(), mode) < 0 && errno != EEXIST) return Error{errno, "mkdir", path};
  return {};
}

void remove_path(const std::string &path) {
  size_t slash = path.rfind('/');
  Fd parent(open(path.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (parent.ok()) (void)remove_at(parent.fd, path.substr(slash + 1).c_str());
}

// A temporary directory, removed with everything in it unless released. It is flock()ed
// while its helper lives, so a helper that was killed leaves an unlocked one, which the next
// helper removes (sweep_stale).
struct TempDir {
  std::string path;
  Fd lock;
  ~TempDir() {
    if (!path.empty()) remove_path(path);
  }
};

Result<TempDir *> make_temp(TempDir &t, const std::string &parent, const std::string &stem) {
  std::string templ = parent + "/" + stem + ".XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) return Error{errno, "mkdtemp", templ};
  t.path = templ;
  t.lock = Fd(open(templ.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!t.lock.ok() || flock(t.lock.fd, LOCK_EX) < 0) return Error{errno, "lock", templ};
  return &t;
}

// Removes what killed helpers left in CACHE/tmp: directories nobody holds a lock on. The
// youngest are spared, for the instant between another helper's mkdtemp and its flock.
void sweep_stale(const std::string &tmp_dir) {
  Fd dir(open(tmp_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.ok()) return;
  int listing = fcntl(dir.fd, F_DUPFD_CLOEXEC, 0);
  DIR *d = listing < 0 ? nullptr : fdopendir(listing);
  if (d == nullptr) {
    if (listing >= 0) close(listing);
    return;
  }
  std::vector<std::string> names;
  while (dirent *e = readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  closedir(d);
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  for (const std::string &name : names) {
    struct stat st{};
    if (fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)) continue;
    double age = static_cast<double>(now.tv_sec - st.st_ctim.tv_sec) + static_cast<double>(now.tv_nsec - st.st_ctim.tv_nsec) / 1e9;
    if (age < 1.0) continue;
    Fd entry(openat(dir.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!entry.ok() || flock(entry.fd, LOCK_EX | LOCK_NB) < 0) continue;  // its helper is alive
    (void)remove_at(dir.fd, name.c_str());
  }
}

// A tar of an OCI layout: its oci-layout, index.json and blobs/sha256/* are copied out (the
// blobs are verified later, when used), everything else is ignored.
Status extract_layout_archive(const std::string &archive_path, const std::string &out, const UnpackLimits &limits) {
  Fd in(open(archive_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.ok()) return Error{errno, "open image archive", archive_path};
  if (Status st = make_dir(out + "/blobs", 0700); !st.ok()) return st;
  if (Status st = make_dir(out + "/blobs/sha256", 0700); !st.ok()) return st;
  Fd out_fd(open(out.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  HashingReader r;
  r.fd = in.fd;
  sha256_init(&r.ctx);
  ArchiveReader ar;
  if (auto opened = open_tar(ar, r); !opened) return plain_error("image archive", archive_path + " is not a tar archive");
  archive_entry *entry = nullptr;
  uint64_t bytes = 0, entries = 0;
  int rc;
  while ((rc = archive_read_next_header(ar.a, &entry)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
    if (++entries > limits.max_entries) return plain_error("image archive", "too many entries");
    const char *raw = archive_entry_pathname(entry);
    auto path = clean_entry_path(raw ? raw : "");
    if (!path || archive_entry_filetype(entry) != AE_IFREG || archive_entry_hardlink(entry) != nullptr) continue;
    bool wanted = *path == "oci-layout" || *path == "index.json" ||
                  (path->rfind("blobs/sha256/", 0) == 0 && valid_digest("sha256:" + path->substr(13)));
    if (!wanted) continue;
    Fd fd(openat(out_fd.fd, path->c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.ok()) return Error{errno, "write layout file", *path};
    if (Status st = write_data(ar.a, fd.fd, *path, limits, &bytes); !st.ok()) return st;
  }
  if (rc != ARCHIVE_EOF)
    return plain_error("image archive", archive_path + ": " + (archive_error_string(ar.a) ? archive_error_string(ar.a) : "read error"));
  return {};
}

Status ensure_mount_points(int root_fd) {
  for (const char *dir : {"proc", "dev", "tmp"}) {
    struct stat st{};
    if (fstatat(root_fd, dir, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!S_ISDIR(st.st_mode))
        return plain_error("image", std::string("/") + dir + " is not a directory (a container mounts it there)");
      continue;
    }
    if (mkdirat(root_fd, dir, std::strcmp(dir, "tmp") == 0 ? 01777 : 0755) < 0) return errno_error("mkdir mount point");
    if (std::strcmp(dir, "tmp") == 0) fchmodat(root_fd, dir, 01777, 0);
  }
  // /var/openfaas/secrets, where a function's secrets are mounted. Each step is a real
  // directory of the image or made here, never a symlink followed: an image's /var may point
  // anywhere. Where the image does not allow it, the mount point is simply absent (and a
  // deploy with secrets is told so).
  int dir_fd = dup(root_fd);
  for (const char *name : {"var", "openfaas", "secrets"}) {
    if (dir_fd < 0) break;
    if (mkdirat(dir_fd, name, 0755) < 0 && errno != EEXIST) {
      close(dir_fd);
      return errno_error("mkdir /var/openfaas/secrets");
    }
    int next = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(dir_fd);
    dir_fd = next;
  }
  if (dir_fd >= 0) close(dir_fd);
  return {};
}

bool exists(const std::string &path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

Status apply_layer(int root_fd, int layer_fd, std::string_view digest, uint64_t size, const UnpackLimits &limits,
                   uint64_t *bytes_used, uint64_t *entries_used) {
  HashingReader r;
  r.fd = layer_fd;
  sha256_init(&r.ctx);
  ArchiveReader ar;
  if (auto opened = open_tar(ar, r); !opened) return opened.error();
  std::unordered_set<std::string> layer_paths;
  archive_entry *entry = nullptr;
  int rc;
  while ((rc = archive_read_next_header(ar.a, &entry)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
    if (++*entries_used > limits.max_entries)
      return plain_error("image too large", "more than " + std::to_string(limits.max_entries) + " entries");
    if (Status st = apply_entry(root_fd, ar.a, entry, layer_paths, limits, bytes_used); !st.ok()) return st;
  }
  if (rc != ARCHIVE_EOF) {
    // A corrupt blob usually fails here first (bad gzip data): say so by its digest.
    Status digest_check = finish_digest(r, digest, size, "layer");
    if (!digest_check.ok()) return digest_check;
    return plain_error("layer is not a valid tar", archive_error_string(ar.a) ? archive_error_string(ar.a) : "read error");
  }
  return finish_digest(r, digest, size, "layer");
}

namespace {
// The tar an image came in, linked beside its rootfs for peers to fetch (layout_tar_path).
// A link is one step, so a peer sees the whole file or none; it is made durable first. Best
// effort: without it the image still serves here, peers just cannot fetch it from this node.
void keep_layout(const std::string &cache_dir, std::string_view digest, const std::string &tar) {
  std::string dest = layout_tar_path(cache_dir, digest);
  Fd fd(open(tar.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.ok() || fsync(fd.fd) < 0 || (link(tar.c_str(), dest.c_str()) < 0 && errno != EEXIST)) {
    std::fprintf(stderr, "faasvisor-unpack: cannot keep %s's layout for peers: %s\n", std::string(digest).c_str(),
                 std::strerror(errno));
    return;
  }
  std::string dir = dest.substr(0, dest.rfind('/'));
  Fd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.ok()) fsync(dir_fd.fd);
}

// The cache's recency: an image's directory mtime is set at each use, the oldest go first.
void mark_used(const std::string &dir) { utimensat(AT_FDCWD, dir.c_str(), nullptr, 0); }
}  // namespace

std::vector<std::string> evict_images(const std::string &cache_dir, uint64_t max_bytes,
                                      const std::vector<std::string> &keep) {
  struct Entry {
    std::string hex;
    uint64_t bytes;
    struct timespec used;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::string dir = cache_dir + "/sha256";
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d)) {
      std::string hex = e->d_name;
      if (!valid_digest("sha256:" + hex)) continue;
      struct stat st {};
      if (stat((dir + "/" + hex).c_str(), &st) < 0) continue;
      uint64_t bytes = 0;
      Fd size_fd(open((dir + "/" + hex + "/size").c_str(), O_RDONLY | O_CLOEXEC));
      if (size_fd.ok())
        if (auto text = read_all(size_fd.fd, 64); text) bytes = std::strtoull(text->c_str(), nullptr, 10);
      entries.push_back({hex, bytes, st.st_mtim});
      total += bytes;
    }
    closedir(d);
  }
  std::sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
    return a.used.tv_sec != b.used.tv_sec ? a.used.tv_sec < b.used.tv_sec : a.used.tv_nsec < b.used.tv_nsec;
  });
  std::vector<std::string> evicted;
  for (const Entry &e : entries) {
    if (total <= max_bytes) break;
    std::string digest = "sha256:" + e.hex;
    if (std::find(keep.begin(), keep.end(), digest) != keep.end()) continue;
    if (remove_image(cache_dir, digest)) {
      total -= e.bytes;
      evicted.push_back(digest);
    }
  }
  return evicted;
}

Result<Resolved> cached_image(const std::string &cache_dir, std::string_view digest) {
  if (!valid_digest(digest)) return plain_error("image", std::string(digest) + " is not a sha256 digest");
  std::string dir = cache_dir + "/sha256/" + std::string(digest_hex(digest));
  Fd cfg(open((dir + "/config.json").c_str(), O_RDONLY | O_CLOEXEC));
  if (!cfg.ok())
    return plain_error("image", std::string(digest) + " is not in this node's image cache (upload it: POST /system/images)");
  auto text = read_all(cfg.fd, kMaxJsonBlob);
  if (!text) return plain_error("image", std::string(digest) + ": its config is larger than 4 MiB");
  auto config = parse_config(*text);
  if (!config) return config.error();
  Resolved out;
  out.digest = std::string(digest);
  out.rootfs = dir + "/rootfs";
  out.config = std::move(*config);
  mark_used(dir);
  return out;
}

namespace {
volatile sig_atomic_t g_receive_aborted = 0;
void on_abort(int) { g_receive_aborted = 1; }
bool receive_aborted() { return g_receive_aborted != 0; }
}  // namespace

Result<Resolved> receive_image(const std::string &cache_dir, int fd, uint64_t max_bytes, bool *too_large) {
  // No SA_RESTART: a read waiting for the node's next bytes returns at once.
  struct sigaction sa {};
  sa.sa_handler = on_abort;
  sigaction(SIGTERM, &sa, nullptr);
  *too_large = false;
  for (const std::string &dir : {cache_dir, cache_dir + "/sha256", cache_dir + "/tmp"})
    if (Status st = make_dir(dir, 0700); !st.ok()) return st.error();
  TempDir upload;
  if (auto t = make_temp(upload, cache_dir + "/tmp", "upload"); !t) return t.error();
  std::string tar = upload.path + "/image.tar";
  Fd out(open(tar.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.ok()) return Error{errno, "open", tar};
  uint64_t total = 0;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    // The node's SIGTERM: the body will not be complete (a cut tar must not be unpacked).
    if (receive_aborted()) return plain_error("image", "the upload was abandoned");
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read the upload");
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > max_bytes) {
      *too_large = true;
      return plain_error("image", "the upload is larger than " + std::to_string(max_bytes) + " bytes (--max-image-bytes)");
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out.fd, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Error{errno, "write", tar};
      done += w;
    }
  }
  if (total == 0) return plain_error("image", "the upload is empty (send an OCI image layout as a tar)");
  if (receive_aborted()) return plain_error("image", "the upload was abandoned");
  out = Fd();
  auto resolved = unpack_image(cache_dir, tar);
  if (resolved) {
    keep_layout(cache_dir, resolved->digest, tar);
    return resolved;
  }
  // The client knows no temp path: "the upload" is what it sent.
  std::string why = resolved.error().message();
  if (why.rfind("image: ", 0) == 0) why.erase(0, 7);
  for (size_t at; (at = why.find(tar)) != std::string::npos;) why.replace(at, tar.size(), "the upload");
  return plain_error("upload", why);
}

Result<Resolved> fetch_image(const std::string &cache_dir, std::string_view digest, const FetchOptions &options) {
  if (!valid_digest(digest)) return plain_error("image", std::string(digest) + " is not a sha256 digest");
  auto cached = cached_image(cache_dir, digest);
  if (cached || options.peers.empty()) return cached;
  for (const std::string &dir : {cache_dir, cache_dir + "/sha256", cache_dir + "/tmp"})
    if (Status st = make_dir(dir, 0700); !st.ok()) return st.error();
  sweep_stale(cache_dir + "/tmp");
  std::string tried;  // each peer and why it did not do
  for (const std::string &peer : options.peers) {
    TempDir work;  // removed, with the fetched tar, whatever happens
    if (auto t = make_temp(work, cache_dir + "/tmp", "fetch"); !t) return t.error();
    std::string tar = work.path + "/image.tar";
    Fd out(open(tar.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out.ok()) return Error{errno, "open", tar};
    PeerGet req{peer, "/system/images/" + std::string(digest), options.authorization, options.max_bytes,
                options.timeout_ms};
    auto got = peer_get(req, out.fd);
    out = Fd();
    std::string why;
    if (!got) why = got.error().message();
    else if (got->status == 404) why = "does not have it";
    else if (got->status != 200) why = "answered " + std::to_string(got->status) + " " + got->error;
    if (why.empty()) {
      auto resolved = unpack_image(cache_dir, tar, {}, nullptr, digest);
      if (resolved) {
        keep_layout(cache_dir, resolved->digest, tar);
        std::fprintf(stderr, "faasvisor-unpack: %s fetched from peer %s (%llu bytes), digests checked\n",
                     std::string(digest).c_str(), peer.c_str(), static_cast<unsigned long long>(got->bytes));
        return resolved;
      }
      why = "sent an image that is refused: " + resolved.error().message();
      for (size_t at; (at = why.find(tar)) != std::string::npos;) why.replace(at, tar.size(), "its answer");
    }
    if (!got || got->status != 404)
      std::fprintf(stderr, "faasvisor-unpack: error: %s from peer %s: %s\n", std::string(digest).c_str(), peer.c_str(),
                   why.c_str());
    tried += (tried.empty() ? "" : "; ") + peer + " " + why;
  }
  return plain_error("image", std::string(digest) + " is not in this node's image cache and no peer gave a good copy (" +
                                  tried + ")");
}

Result<Resolved> remove_image(const std::string &cache_dir, std::string_view digest) {
  if (!valid_digest(digest)) return plain_error("image", std::string(digest) + " is not a sha256 digest");
  std::string dir = cache_dir + "/sha256/" + std::string(digest_hex(digest));
  if (!exists(dir + "/config.json")) return plain_error("image", std::string(digest) + " is not in the cache");
  TempDir gone;
  if (auto t = make_temp(gone, cache_dir + "/tmp", "removed"); !t) return t.error();
  // Onto the empty temp dir, in one step: a deploy sees the image whole or not at all.
  if (rename(dir.c_str(), gone.path.c_str()) < 0) return Error{errno, "rename", dir};
  Resolved out;
  out.digest = std::string(digest);
  out.rootfs = dir + "/rootfs";
  return out;  // ~TempDir removes the tree
}

Result<Resolved> unpack_image(const std::string &cache_dir, const std::string &image, const UnpackLimits &limits,
                              const PullOptions *pull, std::string_view expected_digest) {
  if (valid_digest(image)) return cached_image(cache_dir, image);
  // Root only: an image may hold setuid binaries, which no host user may reach through the
  // cache (the runtimes, which do, run as root; in the container noNewPrivileges holds).
  // Its parents (e.g. /var/lib/faasvisor on a fresh host) are ordinary directories.
  for (size_t slash = cache_dir.find('/', 1); slash != std::string::npos; slash = cache_dir.find('/', slash + 1))
    if (Status st = make_dir(cache_dir.substr(0, slash), 0755); !st.ok()) return st.error();
  for (const std::string &dir : {cache_dir, cache_dir + "/sha256", cache_dir + "/tmp"})
    if (Status st = make_dir(dir, 0700); !st.ok()) return st.error();
  if (chmod(cache_dir.c_str(), 0700) < 0) return Error{errno, "chmod", cache_dir};
  sweep_stale(cache_dir + "/tmp");
  TempDir extracted;
  std::string layout = image;
  if (is_registry_reference(image)) {
    auto ref = parse_reference(image);
    if (!ref) return ref.error();
    if (auto t = make_temp(extracted, cache_dir + "/tmp", "pull"); !t) return t.error();
    layout = extracted.path + "/layout";
    if (Status s = pull_reference(pull ? *pull : PullOptions{}, *ref, layout); !s.ok()) return s.error();
  }
  struct stat st{};
  if (stat(layout.c_str(), &st) < 0) return Error{errno, "image", image};
  if (S_ISREG(st.st_mode)) {
    if (auto t = make_temp(extracted, cache_dir + "/tmp", "archive"); !t) return t.error();
    if (Status s = extract_layout_archive(image, extracted.path, limits); !s.ok()) return s.error();
    layout = extracted.path;
  }
  Fd layout_fd(open(layout.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!layout_fd.ok()) return Error{errno, "image", image};
  Fd marker(openat(layout_fd.fd, "oci-layout", O_RDONLY | O_CLOEXEC));
  if (!marker.ok()) return plain_error("image", image + " is not an OCI image layout (no oci-layout file)");
  auto marker_text = read_all(marker.fd, 4096);
  if (!marker_text || marker_text->find("imageLayoutVersion") == std::string::npos)
    return plain_error("image", image + ": oci-layout has no imageLayoutVersion");
  Fd index_fd(openat(layout_fd.fd, "index.json", O_RDONLY | O_CLOEXEC));
  if (!index_fd.ok()) return plain_error("image", image + " has no index.json");
  auto index_text = read_all(index_fd.fd, kMaxJsonBlob);
  if (!index_text) return plain_error("image", image + ": index.json is larger than 4 MiB");
  auto manifest_desc = parse_index(*index_text);
  if (!manifest_desc) return manifest_desc.error();
  if (!expected_digest.empty() && manifest_desc->digest != expected_digest)
    return plain_error("digest mismatch", "the layout's manifest is " + manifest_desc->digest + ", not " +
                                              std::string(expected_digest));
  auto manifest_text = read_blob(layout_fd.fd, *manifest_desc, "manifest");
  if (!manifest_text) return manifest_text.error();
  auto manifest = parse_manifest(*manifest_text);
  if (!manifest) return manifest.error();
  auto config_text = read_blob(layout_fd.fd, manifest->config, "image config");
  if (!config_text) return config_text.error();
  auto config = parse_config(*config_text);
  if (!config) return config.error();

  Resolved out;
  out.digest = manifest_desc->digest;
  out.config = std::move(*config);
  std::string hex(digest_hex(out.digest));
  std::string final_dir = cache_dir + "/sha256/" + hex;
  out.rootfs = final_dir + "/rootfs";
  if (exists(final_dir + "/config.json")) {  // complete: renamed into place whole
    mark_used(final_dir);
    return out;
  }

  TempDir work;
  if (auto t = make_temp(work, cache_dir + "/tmp", hex); !t) return t.error();
  std::string rootfs = work.path + "/rootfs";
  if (Status s = make_dir(rootfs, 0755); !s.ok()) return s.error();
  Fd root_fd(open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  uint64_t bytes = 0, entries = 0;
  for (size_t i = 0; i < manifest->layers.size(); ++i) {
    const Descriptor &layer = manifest->layers[i];
    std::string which = "layer " + std::to_string(i + 1) + " of " + std::to_string(manifest->layers.size()) + " (" +
                        layer.digest.substr(0, 19) + "...)";
    Fd fd = open_blob(layout_fd.fd, layer.digest);
    if (!fd.ok()) return plain_error("image", which + " is missing from the layout");
    Status applied = apply_layer(root_fd.fd, fd.fd, layer.digest, layer.size, limits, &bytes, &entries);
    if (!applied.ok()) return plain_error("image", which + ": " + applied.error().message());
  }
  if (Status s = ensure_mount_points(root_fd.fd); !s.ok()) return s.error();
  // The root directory itself: readable by the container's user whatever the layers said.
  if (chmod(rootfs.c_str(), 0755) < 0) return Error{errno, "chmod", rootfs};
  // Its size, for the cache's eviction (--image-cache-max): file data, a floor of what it holds.
  std::string size_text = std::to_string(bytes) + "\n";
  Fd size_fd(open((work.path + "/size").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!size_fd.ok() || ::write(size_fd.fd, size_text.data(), size_text.size()) != static_cast<ssize_t>(size_text.size()))
    return Error{errno, "write", work.path + "/size"};
  std::string config_path = work.path + "/config.json";
  Fd cfg(open(config_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!cfg.ok() || ::write(cfg.fd, config_text->data(), config_text->size()) != static_cast<ssize_t>(config_text->size()))
    return Error{errno, "write", config_path};
  // Everything reaches the disk before the name does: a crash or power loss leaves a temp
  // dir, never a named image with empty files. syncfs flushes the whole filesystem: on a disk
  // busy with other writers it is most of an unpack's time (bench/images).
  Fd sync_fd(open(work.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!sync_fd.ok() || syncfs(sync_fd.fd) < 0) return errno_error("syncfs");
  if (rename(work.path.c_str(), final_dir.c_str()) == 0) {
    work.path.clear();
    out.unpacked = true;
    return out;
  }
  if ((errno == EEXIST || errno == ENOTEMPTY) && exists(final_dir + "/config.json")) return out;  // another node won
  return Error{errno, "rename", final_dir};
}

}  // namespace faasvisor::image
