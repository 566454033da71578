// Per-request sampling and stopping parameters, with their validation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tidal {

// Temperatures below this draw greedily (a smaller one would scale logits past float range,
// where every kept id ties at infinity).
constexpr float kGreedyBelowTemperature = 1e-5f;
// stop_token_ids a request may give: their ids are banned before min_tokens, in a buffer sized once
// at warm-up.
constexpr size_t kMaxStopTokenIds = 64;

// The grammar a request's output must follow (structured output), as the API gave it; the
// engine compiles it (engine/structured_output.h).
struct StructuredOutput {
  enum class Kind : uint8_t { kNone, kJsonObject, kJsonSchema, kRegex, kChoice, kGrammar };
  Kind kind = Kind::kNone;
  // kJsonSchema: the schema as JSON text; kRegex: the pattern; kGrammar: EBNF (xgrammar's
  // dialect, root rule "root"); kChoice: a JSON array of the strings allowed.
  std::string spec;
  // The request field it came from (response_format, guided_json, structured_outputs, ...), for
  // messages that name it.
  std::string field;

  bool active() const { return kind != Kind::kNone; }
};

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0 or -1: off
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  int64_t max_tokens = 16;
  int64_t min_tokens = 0;
  std::vector<std::string> stop;        // stop strings, excluded from the text
  std::vector<int32_t> stop_token_ids;  // in addition to the model's EOS ids
  bool ignore_eos = false;
  std::optional<int32_t> logprobs;  // number of top alternatives per generated token
  // vLLM's prompt_logprobs: each prompt token's logprob given the tokens before it (the first
  // has none), with this many top alternatives; the CPU backend's sampler only, for now.
  std::optional<int32_t> prompt_logprobs;
  bool skip_special_tokens = true;
  // vLLM's definitions, applied in this order to the logits the draw (greedy included) sees;
  // logprobs stay those of the model's raw logits:
  //   logit_bias: logit[id] += bias (clamped to [-100, 100] by the API, as OpenAI does);
  //   repetition_penalty r: an id in the prompt or the output gets logit / r if positive, else
  //   logit * r; frequency_penalty f and presence_penalty p: logit -= f * count + p * (count > 0),
  //   count being the id's occurrences in the output; then temperature, then min_p (ids below
  //   min_p times the most likely one's probability are dropped), then top_k and top_p.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  float min_p = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;  // by id, each id once
  std::vector<int32_t> allowed_token_ids;             // empty: every id may be drawn
  // Token sequences that may not be completed: the last id of one is banned whenever the output
  // ends with the rest of it (a one-token sequence is banned always).
  std::vector<std::vector<int32_t>> bad_words_ids;
  StructuredOutput structured_output;

  bool greedy() const { return temperature < kGreedyBelowTemperature; }
  // Whether the draw needs more than temperature, top-k, top-p and banned ids: the logit
  // adjustments, min_p, allowed_token_ids, bad_words or prompt_logprobs (the CPU backend's
  // sampler only, for now).
  bool needs_adjusted_sampling() const { return adjusted_sampling_field() != nullptr; }
  // The first request field that makes the draw adjusted (for errors that name it), or nullptr.
  const char* adjusted_sampling_field() const;
  // Whether the logits change before the draw (penalties or bias).
  bool adjusts_logits() const;
  // Returns an invalid_argument Status naming the first bad field.
  Status validate(int32_t vocab_size) const;
};

}  // namespace tidal
