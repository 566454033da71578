// parse_int_list: split on commas, parse each item whole, check its range.
#include "apps/tidal/int_list.h"

#include <sstream>

#include "common/error.h"

namespace tidal::cli {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option, int64_t min,
                                    int64_t max, const std::string& what) {
  std::vector<int64_t> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || value < min || value > max) {
      TIDAL_FAIL(option, ": '", item, "' is not ", what);
    }
    values.push_back(value);
  }
  return values;
}

}  // namespace tidal::cli
