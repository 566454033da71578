// Comma-separated integer lists on the command line ("1,8,32", token ids).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tidal::cli {

// Every item must be an integer in [min, max]; otherwise throws tidal::Error naming the option,
// the item and what it should be (`what`, e.g. "a positive integer").
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option, int64_t min,
                                    int64_t max, const std::string& what);

}  // namespace tidal::cli
