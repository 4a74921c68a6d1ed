// faasvisor-unpack [--authfile FILE] [--insecure-registry HOST:PORT]... CACHE_DIR IMAGE:
// resolves an OCI image (a layout, a tar of one, or a registry reference it pulls first,
// image/pull.h) to its rootfs in the node's cache, unpacking it if needed (image/unpack.h). The node runs it at deploy time, off its loop, and
// watches its pidfd. Answers with one JSON line on stdout (image/layout.h encode_resolved or
// encode_failure); exits 0 on success, 1 when the image is unusable, 2 on bad usage.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "image/pull.h"
#include "image/unpack.h"

int main(int argc, char **argv) {
  faasvisor::image::PullOptions pull;
  int i = 1;
  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    std::string flag = argv[i];
    if (flag == "--authfile") pull.authfile = argv[i + 1];
    else if (flag == "--insecure-registry") pull.insecure.emplace_back(argv[i + 1]);
    else break;
  }
  if (argc - i != 2 || argv[i][0] != '/' || argv[i + 1][0] == '\0') {
    std::fprintf(stderr, "usage: faasvisor-unpack [--authfile FILE] [--insecure-registry HOST:PORT]... /CACHE_DIR IMAGE\n");
    return 2;
  }
  umask(022);
  setpriority(PRIO_PROCESS, 0, 5);  // below the node's loop
  auto resolved = faasvisor::image::unpack_image(argv[i], argv[i + 1], {}, &pull);
  std::string out = resolved ? faasvisor::image::encode_resolved(*resolved)
                             : faasvisor::image::encode_failure(resolved.error().message().substr(0, 4096));
  if (out.size() > faasvisor::image::kMaxAnswer) {
    out = faasvisor::image::encode_failure("image config: Entrypoint, Cmd, Env and WorkingDir take more than 60 KiB");
    resolved = faasvisor::plain_error("too large");
  }
  if (::write(1, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return 1;
  return resolved ? 0 : 1;
}
