#include "image/pull.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

namespace faasvisor::image {

std::vector<std::string> pull_command(const PullOptions &options, const Reference &ref, const std::string &dest) {
  // --insecure-policy: no signature policy file is needed (none is configured on a node);
  // integrity comes from the digests, which skopeo and the unpacker both check.
  std::vector<std::string> argv{options.skopeo, "--insecure-policy", "--override-os", "linux", "--override-arch",
                                "amd64", "copy", "--quiet", "--retry-times", "0"};
  if (!options.authfile.empty()) {
    argv.emplace_back("--src-authfile");
    argv.push_back(options.authfile);
  } else {
    argv.emplace_back("--src-no-creds");
  }
  bool insecure = std::find(options.insecure.begin(), options.insecure.end(), ref.registry) != options.insecure.end();
  argv.push_back(insecure ? "--src-tls-verify=false" : "--src-tls-verify=true");
  argv.push_back(ref.source());
  argv.push_back("oci:" + dest);
  return argv;
}

namespace {
// skopeo ends with one logrus line: time="..." level=fatal msg="WHAT". The WHAT, unquoted.
std::string skopeo_reason(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t line = text.rfind('\n');
  std::string last = line == std::string::npos ? text : text.substr(line + 1);
  size_t msg = last.find("msg=\"");
  if (msg == std::string::npos) return last;
  std::string out;
  for (size_t i = msg + 5; i < last.size() && last[i] != '"'; ++i) {
    if (last[i] == '\\' && i + 1 < last.size()) ++i;
    out += last[i];
  }
  return out;
}
}  // namespace

Status pull_reference(const PullOptions &options, const Reference &ref, const std::string &dest) {
  std::vector<std::string> args = pull_command(options, ref, dest);
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) < 0) return errno_error("pipe2");
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return errno_error("fork");
  if (pid == 0) {
    // skopeo dies with the helper (which the node kills past its deadline).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(err_pipe[1], 2);
    // HOME: where skopeo would otherwise look for credentials of its own; none here.
    char *const env[] = {const_cast<char *>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
                         const_cast<char *>("HOME=/nonexistent"), nullptr};
    execve(argv[0], argv.data(), env);
    _exit(127);
  }
  close(err_pipe[1]);
  std::string errors;
  char buf[4096];
  for (;;) {
    ssize_t n = read(err_pipe[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (errors.size() < 65536) errors.append(buf, static_cast<size_t>(n));
  }
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  std::string name = ref.registry + "/" + ref.repository + (ref.digest.empty() ? ":" + ref.tag : "@" + ref.digest);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && errors.empty())
    return plain_error("registry", "cannot run " + options.skopeo + " to pull " + name + " (is skopeo installed?)");
  return plain_error("registry", "pulling " + name + ": " + skopeo_reason(errors).substr(0, 2048));
}

}  // namespace faasvisor::image
