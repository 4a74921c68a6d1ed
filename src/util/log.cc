#include "util/log.h"

#include <cstdio>
#include <ctime>

namespace faasvisor::log {
namespace {
Level g_level = Level::info;
const char *const kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return g_level; }

void write(Level lvl, const char *fmt, ...) {
  char line[2048];
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  int n = std::snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld faasvisord %s: ", utc.tm_hour,
                        utc.tm_min, utc.tm_sec, ts.tv_nsec / 1000000,
                        kNames[static_cast<int>(lvl)]);
  va_list args;
  va_start(args, fmt);
  int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, args);
  va_end(args);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  // stderr is unbuffered; one fwrite per line keeps lines whole. Logging is off the hot path.
  std::fwrite(line, 1, len, stderr);
}

}  // namespace faasvisor::log
