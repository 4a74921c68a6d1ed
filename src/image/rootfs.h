// Questions about a root filesystem asked from the host, answered as the container would
// see them: every path resolved inside the root (openat2 RESOLVE_IN_ROOT), so an image's
// absolute symlinks (/bin -> /usr/bin) lead where they lead in the container, never out.
#pragma once

#include <string>
#include <vector>

#include "util/result.h"

namespace faasvisor::image {

// Finds the program a container runs for `command` with environment `env` ("NAME=value";
// PATH is searched for a bare name, as the OCI runtimes do). Fails, naming what is wrong,
// unless it is an executable regular file.
Result<std::string> find_command(const std::string &rootfs, const std::string &command,
                                 const std::vector<std::string> &env);

// Whether `dir` (absolute, as inside the container) is a directory of rootfs.
bool is_directory_in(const std::string &rootfs, const std::string &dir);

}  // namespace faasvisor::image
