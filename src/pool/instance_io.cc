#include "pool/instance_io.h"

#include <poll.h>
#include <unistd.h>

namespace faasvisor::pool {

void RingInstanceIo::watch_exit(io::Completion &c, const backend::Launched &launched) {
  ring_.poll(c, launched.child.pidfd(), POLLIN);
}

void RingInstanceIo::close_stream(int fd) { ::close(fd); }

}  // namespace faasvisor::pool
