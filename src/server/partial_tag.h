// Shared by the answer splitters (reasoning_parser, tool_call_parser): how many bytes at the end
// of streamed text must wait because they may still become a tag.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace tidal {

// The length of the longest suffix of `text` that is a proper prefix of `tag`.
inline size_t partial_tag_suffix(std::string_view text, std::string_view tag) {
  for (size_t length = std::min(text.size(), tag.size() - 1); length > 0; --length) {
    if (text.substr(text.size() - length) == tag.substr(0, length)) return length;
  }
  return 0;
}

}  // namespace tidal
