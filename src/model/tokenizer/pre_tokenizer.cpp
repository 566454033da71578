// Pre-tokenizer steps and their depth-first application.
#include "model/tokenizer/pre_tokenizer.h"

#include "common/error.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/json_fields.h"
#include "model/tokenizer/utf8.h"

namespace tidal::tok {

namespace {

// What ByteLevel splits with when use_regex is set (GPT-2's pattern).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void numeric_chars(std::string_view text, std::vector<Span>& matches) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    if (is_numeric(next_code_point(text, pos))) matches.push_back({begin, pos});
  }
}

}  // namespace

void PreTokenizer::add_steps(const Json& config, const std::string& source,
                             std::vector<Step>& steps) {
  if (config.is_null()) return;
  const std::string type = type_field(config, "pre_tokenizer", source);
  if (type == "Sequence") {
    const Json& list = require_field(config, "pretokenizers", "Sequence pre_tokenizer", source);
    TIDAL_CHECK(list.is_array(), "tokenizer ", source, ": \"pretokenizers\" is not an array");
    for (const Json& item : list) add_steps(item, source, steps);
  } else if (type == "Split") {
    Step step{.kind = Kind::kSplit};
    const Json& pattern = require_field(config, "pattern", "Split pre_tokenizer", source);
    if (pattern.contains("Regex")) {
      step.regex = Regex::from_oniguruma(pattern["Regex"].get<std::string>(), source);
    } else if (pattern.contains("String")) {
      step.regex = Regex::literal(pattern["String"].get<std::string>(), source);
    } else {
      TIDAL_FAIL("tokenizer ", source, ": Split pattern is neither {\"Regex\"} nor {\"String\"}");
    }
    step.behavior = parse_split_behavior(
        require_field(config, "behavior", "Split pre_tokenizer", source).get<std::string>(),
        source);
    step.invert = bool_field(config, "invert", false);
    steps.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    Step step{.kind = Kind::kByteLevel};
    step.add_prefix_space = bool_field(config, "add_prefix_space", true);
    if (bool_field(config, "use_regex", true)) {
      step.regex = Regex::from_oniguruma(kGpt2Pattern, source);
    }
    steps.push_back(std::move(step));
  } else if (type == "Digits") {
    Step step{.kind = Kind::kDigits};
    step.individual_digits = bool_field(config, "individual_digits", false);
    step.behavior = step.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
    steps.push_back(std::move(step));
  } else {
    TIDAL_FAIL("tokenizer ", source, ": unsupported pre_tokenizer type '", type, "'");
  }
}

PreTokenizer PreTokenizer::from_json(const Json& config, const std::string& source) {
  PreTokenizer pre_tokenizer;
  add_steps(config, source, pre_tokenizer.steps_);
  return pre_tokenizer;
}

void PreTokenizer::split(std::string_view text, WordSink& sink) const {
  run(0, text, sink);
}

void PreTokenizer::run(size_t step_index, std::string_view piece, WordSink& sink) const {
  if (piece.empty()) return;
  if (step_index == steps_.size()) {
    sink.word(piece);
    return;
  }
  const Step& step = steps_[step_index];
  if (step.kind == Kind::kByteLevel) {
    run_byte_level(step_index, piece, sink);
    return;
  }
  std::vector<Span> matches;
  if (step.kind == Kind::kSplit) {
    step.regex->find_all(piece, matches);
  } else {
    numeric_chars(piece, matches);
  }
  std::vector<Span> pieces;
  split_by_matches(piece.size(), matches, step.behavior, step.invert, pieces);
  for (const Span& span : pieces) {
    run(step_index + 1, piece.substr(span.begin, span.end - span.begin), sink);
  }
}

void PreTokenizer::run_byte_level(size_t step_index, std::string_view piece, WordSink& sink) const {
  const Step& step = steps_[step_index];
  std::string prefixed;
  if (step.add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed += ' ';
    prefixed += piece;
    piece = prefixed;
  }
  std::vector<Span> pieces;
  if (step.regex) {
    std::vector<Span> matches;
    step.regex->find_all(piece, matches);
    split_by_matches(piece.size(), matches, SplitBehavior::kIsolated, false, pieces);
  } else {
    pieces.push_back({0, piece.size()});
  }
  std::string mapped;
  for (const Span& span : pieces) {
    if (span.begin == span.end) continue;
    mapped.clear();
    append_byte_level(piece.substr(span.begin, span.end - span.begin), mapped);
    run(step_index + 1, mapped, sink);
  }
}

}  // namespace tidal::tok
