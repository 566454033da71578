// tidal::Error and the check macros: a failed check throws an Error naming the expression and
// place.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tidal {

// Concatenates any streamable values into one string (GCC 12 has no std::format).
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

// Thrown for programming errors and unrecoverable input (a corrupt checkpoint, a failed kernel).
// Recoverable outcomes (bad request, KV full, lost peer) are values: see status.h.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

[[noreturn]] void throw_check_failure(const char* expression, const char* file, int line,
                                      const std::string& message);

}  // namespace tidal

// TIDAL_CHECK(cond, "what went wrong ", value, ...): throws tidal::Error when cond is false.
#define TIDAL_CHECK(cond, ...)                                                            \
  do {                                                                                    \
    if (!(cond)) [[unlikely]]                                                             \
      ::tidal::throw_check_failure(#cond, __FILE__, __LINE__, ::tidal::cat(__VA_ARGS__)); \
  } while (0)

// TIDAL_FAIL("message", ...): throws tidal::Error unconditionally with a user-facing message.
#define TIDAL_FAIL(...) throw ::tidal::Error(::tidal::cat(__VA_ARGS__))
