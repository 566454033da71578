// The five split behaviours, computed over a match/gap cover the way Hugging Face folds it.
#include "model/tokenizer/split.h"

#include <algorithm>

#include "common/error.h"

namespace tidal::tok {

namespace {

struct Part {
  Span span;
  bool is_match;
};

}  // namespace

SplitBehavior parse_split_behavior(std::string_view name, const std::string& source) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  TIDAL_FAIL("tokenizer ", source, ": unsupported Split behavior '", name, "'");
}

void split_by_matches(size_t size, const std::vector<Span>& matches, SplitBehavior behavior,
                      bool invert, std::vector<Span>& pieces) {
  // The cover: gaps and matches alternating over the whole text, like Pattern::find_matches.
  std::vector<Part> parts;
  parts.reserve(matches.size() * 2 + 1);
  if (size == 0) {
    parts.push_back({{0, 0}, false});
  } else {
    size_t previous = 0;
    for (const Span& match : matches) {
      if (previous != match.begin) parts.push_back({{previous, match.begin}, false});
      parts.push_back({match, true});
      previous = match.end;
    }
    if (previous != size) parts.push_back({{previous, size}, false});
  }
  if (invert) {
    for (Part& part : parts) part.is_match = !part.is_match;
  }

  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& part : parts) pieces.push_back(part.span);
      return;
    case SplitBehavior::kRemoved:
      for (const Part& part : parts) {
        if (!part.is_match) pieces.push_back(part.span);
      }
      return;
    case SplitBehavior::kContiguous:
    case SplitBehavior::kMergedWithPrevious: {
      const size_t first_piece = pieces.size();
      bool previous_match = false;
      for (const Part& part : parts) {
        const bool extend = behavior == SplitBehavior::kContiguous
                                ? part.is_match == previous_match
                                : part.is_match && !previous_match;
        if (extend && pieces.size() > first_piece) {
          pieces.back().end = part.span.end;
        } else {
          pieces.push_back(part.span);
        }
        previous_match = part.is_match;
      }
      return;
    }
    case SplitBehavior::kMergedWithNext: {
      // Folded from the right, then put back in order.
      const size_t first_piece = pieces.size();
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && pieces.size() > first_piece) {
          pieces.back().begin = it->span.begin;
        } else {
          pieces.push_back(it->span);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin() + static_cast<std::ptrdiff_t>(first_piece), pieces.end());
      return;
    }
  }
}

}  // namespace tidal::tok
