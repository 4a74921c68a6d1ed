// Unpacking OCI images into the node's content-addressed cache. Run by the faasvisor-unpack
// helper, never on the node's loop: it reads and writes whole layers.
//
// Cache layout (CACHE is the node's --image-cache, default /var/lib/faasvisor/images):
//   CACHE/sha256/<manifest digest>/rootfs        the root filesystem, shared read-only
//   CACHE/sha256/<manifest digest>/config.json   the image config blob, as published
//   CACHE/tmp/                                   work in progress, renamed into place whole
// An image is unpacked into CACHE/tmp and renamed to its final name in one step, so a crash
// or a concurrent node never leaves (or sees) a half-made image; the loser of a race drops
// its copy. Nothing in the cache is ever written to again.
//
// Safety: every blob is checked against its sha256 digest and size. Layer entries with an
// absolute path or a ".." component are refused, as is any entry (file, link, whiteout)
// whose parent directory resolves outside the root through a symlink (openat2 with
// RESOLVE_BENEATH: absolute symlinks and ".." that climb out both fail); hard links must
// name a target inside the root the same way. Device nodes, FIFOs and sockets are skipped.
// Whiteouts (.wh.NAME) delete NAME from lower layers; an opaque whiteout (.wh..wh..opq)
// empties its directory of what lower layers put there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image/layout.h"
#include "util/result.h"

namespace faasvisor::image {

struct UnpackLimits {
  uint64_t max_bytes = 8ull << 30;     // file data written, all layers together
  uint64_t max_entries = 1'000'000;    // entries, all layers together
};

// Resolves `image` (an OCI layout directory, a tar archive of one, or a registry reference
// pulled first with `pull`, image/pull.h) to its cached rootfs, unpacking it first if the
// cache does not have it.
// `expected_digest` (an image fetched from a peer): refused, before any layer is read, unless
// the layout's manifest has this digest.
struct PullOptions;
Result<Resolved> unpack_image(const std::string &cache_dir, const std::string &image,
                              const UnpackLimits &limits = {}, const PullOptions *pull = nullptr,
                              std::string_view expected_digest = {});

// An image already in the cache, by its manifest digest ("sha256:...": an uploaded image).
Result<Resolved> cached_image(const std::string &cache_dir, std::string_view digest);

// POST /system/images: reads an OCI layout tar from fd (the node pipes the request body in
// as it arrives) into a file in CACHE/tmp, at most max_bytes (*too_large is set past them),
// then unpacks it like any archive.
Result<Resolved> receive_image(const std::string &cache_dir, int fd, uint64_t max_bytes, bool *too_large);

// A node that lacks an uploaded image ("image": "sha256:...") fetches it from a peer that has
// it (docs/cluster.md): each peer in turn, its answer streamed into CACHE/tmp (at most
// max_bytes), then unpacked as an upload is, refused unless its manifest has `digest` and
// every blob its own digest. The first peer that gives a good copy wins; each failure is
// logged on stderr and named in the error if all fail.
struct FetchOptions {
  std::vector<std::string> peers;  // "HOST:PORT", in the order to try
  std::string authorization;       // the peers' basic auth header value, or empty
  uint64_t max_bytes = 2ull << 30;
  uint64_t timeout_ms = 30'000;    // per wait for bytes
};
Result<Resolved> fetch_image(const std::string &cache_dir, std::string_view digest, const FetchOptions &options);

// DELETE /system/images/DIGEST: the image's directory is renamed out of the cache (no deploy
// finds it from then on) and removed.
Result<Resolved> remove_image(const std::string &cache_dir, std::string_view digest);

// --image-cache-max: removes the least recently used images not in `keep` until the
// cache's images hold at most max_bytes of file data. Returns the digests removed.
std::vector<std::string> evict_images(const std::string &cache_dir, uint64_t max_bytes,
                                      const std::vector<std::string> &keep);

// Applies one layer (a tar, compressed or not, read from fd) to the directory root_fd;
// exposed for tests. `digest`: checked against the bytes read (empty: not checked).
Status apply_layer(int root_fd, int layer_fd, std::string_view digest, uint64_t size,
                   const UnpackLimits &limits, uint64_t *bytes_used, uint64_t *entries_used);

}  // namespace faasvisor::image
