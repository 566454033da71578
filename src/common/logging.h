// Minimal levelled logging to stderr; one line per call, safe from several threads.
#pragma once

#include <string>

#include "common/error.h"

namespace tidal {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

void set_log_level(LogLevel level);
void log_line(LogLevel level, const std::string& message);

template <typename... Args>
void log_info(Args&&... args) {
  log_line(LogLevel::kInfo, cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_warning(Args&&... args) {
  log_line(LogLevel::kWarning, cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(Args&&... args) {
  log_line(LogLevel::kDebug, cat(std::forward<Args>(args)...));
}

}  // namespace tidal
