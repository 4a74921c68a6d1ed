// Registry images: the faasvisor-unpack helper pulls a reference with skopeo (a well-kept
// OCI distribution client) into an OCI layout in the cache's work directory, then unpacks
// that like any layout (image/unpack.h). skopeo resolves a manifest list (an image index)
// to linux/amd64 and checks every blob's digest as it downloads; the unpacker checks them
// again. Never on the node's loop: the helper is a process of its own.
#pragma once

#include <string>
#include <vector>

#include "image/layout.h"
#include "util/result.h"

namespace faasvisor::image {

struct PullOptions {
  std::string skopeo = "/usr/bin/skopeo";
  std::string authfile;                 // Docker-style config.json (--registry-auth); empty: none
  std::vector<std::string> insecure;    // HOST:PORT whose TLS is not verified (--insecure-registry)
};

// The skopeo command line that copies `ref` into the OCI layout directory `dest`.
std::vector<std::string> pull_command(const PullOptions &options, const Reference &ref, const std::string &dest);

// Runs it. An error carries skopeo's own words (the registry's answer: "manifest unknown",
// "unauthorized", a TLS failure...).
Status pull_reference(const PullOptions &options, const Reference &ref, const std::string &dest);

}  // namespace faasvisor::image
