// The rows of a sampling step as every backend reads and writes them: plain structs, laid out the
// same on the host and the device (the engine fills SamplingRow on the host and uploads it; the
// kernels write SampledToken, which the engine downloads). Included by CPU and CUDA code alike.
#pragma once

#include <cstdint>

namespace tidal {

// The most top alternatives a row may ask for (the OpenAI API's limit).
constexpr int32_t kMaxTopLogprobs = 20;

// How one row of logits becomes a token.
//  - Banned ids (banned[banned_begin, banned_begin + banned_count)) are never chosen; they still
//    count in the logprobs, which are those of the model's own distribution. Ids outside
//    [0, vocab) are ignored. A range outside the banned tensor is an error on the CPU; the GPU
//    reads only the part inside.
//  - Order: logits compare as floats with -0 == +0, and equal values go to the lower id.
//  - temperature <= 0 (or NaN): greedy, the lowest id among the largest allowed logits.
//  - Otherwise s = logit / temperature (one IEEE division) over the allowed ids; top_k > 0 keeps
//    the ids whose s is at least the k-th largest s (ties at the boundary all kept); top_p < 1
//    then keeps the ids whose s is at least the largest value v such that the kept ids with
//    s >= v hold at least top_p of the kept probability, the probability of an id being
//    w = exp(s - max s) (w = 1 where s == max s, so infinite logits work) over the kept sum; so
//    top_p <= 0 keeps the ties of the largest s. The draw is the argmax over the kept ids of
//    s + g in float, g = -logf(-logf(u)), u = counter_random::sampling_uniform(seed, counter, id)
//    (ties: the lower id): the Gumbel-max trick, a draw from softmax(s) over the kept ids. The
//    draw depends on (seed, counter) and the logits only: no state to carry between steps or
//    ranks, and the CPU and the GPU draw the same token unless a top-p sum lands within float
//    rounding of top_p (or, about once in millions of rows, their logf differ by an ulp where
//    two draws tie within it).
//  - Logprobs (num_top_logprobs >= 0, at most kMaxTopLogprobs counted): log_softmax of the raw
//    logits (no temperature, banned ids included) at the token, and the top n ids of the raw
//    logits with theirs. NaN logits give an unspecified token (never an out-of-range one).
//  - Adjusted draws (the CPU backend only, for now; SamplingParams says what each field means):
//    allowed ids (ids[allowed_begin, +allowed_count), when the count is > 0) narrow what may be
//    drawn before banned ids are taken out; LogitAdjustment entries (adjust_count of them, as
//    kLogitAdjustmentWords words each from ids[adjust_begin]) change the logits the draw sees
//    (bias, then repetition_penalty for ids in the context, then the output count's
//    frequency and presence penalties); min_p > 0 drops, after temperature, the ids whose s is
//    below max s + log(min_p), before top_k and top_p. Logprobs stay the raw logits'.
struct SamplingRow {
  uint64_t seed = 0;
  uint64_t counter = 0;  // the request's output index of the token drawn
  float temperature = 0.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  int32_t num_top_logprobs = -1;  // -1: no logprobs; 0..kMaxTopLogprobs: the token's and top n
  int32_t banned_begin = 0;
  int32_t banned_count = 0;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  float min_p = 0.0f;
  int32_t adjust_begin = 0;  // in int32 words of the ids buffer
  int32_t adjust_count = 0;  // LogitAdjustment entries
  int32_t allowed_begin = 0;
  int32_t allowed_count = 0;
};
static_assert(sizeof(SamplingRow) == 72, "SamplingRow is uploaded as 18 int32 words per row");

// One id whose logit an adjusted draw changes, stored in the ids buffer as int32 words.
struct LogitAdjustment {
  int32_t id = 0;
  float bias = 0.0f;         // logit_bias
  int32_t output_count = 0;  // occurrences in the output (frequency and presence penalties)
  int32_t in_context = 0;    // 1: in the prompt or the output (repetition penalty)
};
static_assert(sizeof(LogitAdjustment) == 16, "LogitAdjustment is 4 int32 words");
constexpr int64_t kLogitAdjustmentWords = sizeof(LogitAdjustment) / 4;

struct SampledToken {
  int32_t token = -1;    // -1 only when every id is banned
  float logprob = 0.0f;  // log_softmax(logits)[token], when num_top_logprobs >= 0 and token >= 0
  int32_t num_top = 0;   // entries of top_* used: min(num_top_logprobs, kMaxTopLogprobs, vocab)
  int32_t top_ids[kMaxTopLogprobs] = {};  // most likely first, ties: lower id first; rest 0
  float top_logprobs[kMaxTopLogprobs] = {};
};
static_assert(sizeof(SampledToken) % 4 == 0, "SampledToken is downloaded as int32 words");

constexpr int64_t kSamplingRowWords = sizeof(SamplingRow) / 4;
constexpr int64_t kSampledTokenWords = sizeof(SampledToken) / 4;

}  // namespace tidal
