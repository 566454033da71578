// Formats check failures into tidal::Error.
#include "common/error.h"

namespace tidal {

void throw_check_failure(const char* expression, const char* file, int line,
                         const std::string& message) {
  std::string text = message.empty() ? std::string("check failed") : message;
  throw Error(cat(text, " [", expression, " at ", file, ":", line, "]"));
}

}  // namespace tidal
