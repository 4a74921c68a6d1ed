// faasvisor-unpack [--authfile FILE] [--insecure-registry HOST:PORT]... CACHE_DIR IMAGE:
// resolves an OCI image (a layout, a tar of one, or a registry reference it pulls first,
// image/pull.h) to its rootfs in the node's cache, unpacking it if needed (image/unpack.h). The node runs it at deploy time, off its loop, and
// watches its pidfd. An uploaded image ("sha256:HEX") missing from the cache is fetched from
// the --peer nodes (image/unpack.h fetch_image) when the node names any. Answers with one JSON line on stdout (image/layout.h encode_resolved or
// encode_failure); exits 0 on success, 1 when the image is unusable, 2 on bad usage.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "image/layout.h"
#include "image/pull.h"
#include "image/unpack.h"

int main(int argc, char **argv) {
  faasvisor::image::PullOptions pull;
  const char *receive_max = nullptr;  // --receive MAX_BYTES: the image is a tar on stdin
  const char *remove_digest = nullptr;  // --remove DIGEST: out of the cache
  uint64_t cache_max = 0;               // --cache-max BYTES: evict past it (0: never)
  std::vector<std::string> keep;        // --keep DIGEST: in use, never evicted
  faasvisor::image::FetchOptions fetch;  // --peer HOST:PORT...: an uploaded digest missing here comes from them
  int i = 1;
  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    std::string flag = argv[i];
    if (flag == "--authfile") pull.authfile = argv[i + 1];
    else if (flag == "--insecure-registry") pull.insecure.emplace_back(argv[i + 1]);
    else if (flag == "--receive") receive_max = argv[i + 1];
    else if (flag == "--remove") remove_digest = argv[i + 1];
    else if (flag == "--cache-max") cache_max = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--keep") keep.emplace_back(argv[i + 1]);
    else if (flag == "--peer") fetch.peers.emplace_back(argv[i + 1]);
    else if (flag == "--max-bytes") fetch.max_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else break;
  }
  bool one_operand = receive_max || remove_digest;
  int operands = one_operand ? 1 : 2;
  if (argc - i != operands || argv[i][0] != '/' || (!one_operand && argv[i + 1][0] == '\0')) {
    std::fprintf(stderr, "usage: faasvisor-unpack [--authfile FILE] [--insecure-registry HOST:PORT]... /CACHE_DIR IMAGE\n"
                         "       faasvisor-unpack [--peer HOST:PORT]... [--max-bytes N] /CACHE_DIR sha256:HEX\n"
                         "       faasvisor-unpack --receive MAX_BYTES /CACHE_DIR < LAYOUT.tar\n"
                         "       faasvisor-unpack --remove sha256:HEX /CACHE_DIR\n");
    return 2;
  }
  // The peers' Authorization header, from the node (image/store.h: not in argv).
  if (const char *auth = std::getenv("FAASVISOR_PEER_AUTHORIZATION")) fetch.authorization = auth;
  umask(022);
  setpriority(PRIO_PROCESS, 0, 5);  // below the node's loop
  bool too_large = false;
  auto resolved = receive_max     ? faasvisor::image::receive_image(argv[i], 0, std::strtoull(receive_max, nullptr, 10), &too_large)
                  : remove_digest ? faasvisor::image::remove_image(argv[i], remove_digest)
                  : !fetch.peers.empty() && faasvisor::image::valid_digest(argv[i + 1])
                      ? faasvisor::image::fetch_image(argv[i], argv[i + 1], fetch)
                                  : faasvisor::image::unpack_image(argv[i], argv[i + 1], {}, &pull);
  if (resolved && cache_max > 0 && !remove_digest) {
    keep.push_back(resolved->digest);  // about to be used by the deploy that asked
    for (const std::string &d : faasvisor::image::evict_images(argv[i], cache_max, keep))
      std::fprintf(stderr, "faasvisor-unpack: evicted %s from the image cache (--image-cache-max)\n", d.c_str());
  }
  std::string out = resolved ? faasvisor::image::encode_resolved(*resolved)
                             : faasvisor::image::encode_failure(resolved.error().message().substr(0, 4096));
  if (out.size() > faasvisor::image::kMaxAnswer) {
    out = faasvisor::image::encode_failure("image config: Entrypoint, Cmd, Env and WorkingDir take more than 60 KiB");
    resolved = faasvisor::plain_error("too large");
  }
  if (::write(1, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return 1;
  return resolved ? 0 : too_large ? 3 : 1;
}
