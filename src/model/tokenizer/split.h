// Hugging Face's SplitDelimiterBehavior: how the matches of a pattern cut a piece of text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/pcre_regex.h"

namespace tidal::tok {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_split_behavior(std::string_view name, const std::string& source);

// Cuts [0, size) by `matches` (sorted, non-overlapping) into the pieces `behavior` keeps, in order.
// `invert` swaps the roles of matches and the gaps between them. Pieces may be empty; callers drop
// those, as Hugging Face does.
void split_by_matches(size_t size, const std::vector<Span>& matches, SplitBehavior behavior,
                      bool invert, std::vector<Span>& pieces);

}  // namespace tidal::tok
