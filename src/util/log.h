// Logging to stderr. Only the deciding layer logs (STYLE.md: helpers return errors).
#pragma once

#include <cstdarg>

namespace faasvisor::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
Level level();
void write(Level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace faasvisor::log

#define FV_LOG(lvl, ...)                                                        \
  do {                                                                          \
    if (static_cast<int>(::faasvisor::log::Level::lvl) >=                      \
        static_cast<int>(::faasvisor::log::level()))                           \
      ::faasvisor::log::write(::faasvisor::log::Level::lvl, __VA_ARGS__);      \
  } while (0)
#define FV_DEBUG(...) FV_LOG(debug, __VA_ARGS__)
#define FV_INFO(...) FV_LOG(info, __VA_ARGS__)
#define FV_WARN(...) FV_LOG(warn, __VA_ARGS__)
#define FV_ERROR(...) FV_LOG(error, __VA_ARGS__)
