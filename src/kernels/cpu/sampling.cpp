// The sampling reference: log-softmax in double, thresholds by sorting, the Gumbel-max draw.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "common/counter_random.h"
#include "common/error.h"

namespace tidal::cpu {
namespace {

// Order-preserving image of a float (-0 mapped to +0), as the CUDA kernel compares values.
uint32_t order_key(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits << 1) == 0) bits = 0;
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

// Larger means preferred: a larger value, then a lower id.
uint64_t rank_of(float value, int64_t id) {
  return (static_cast<uint64_t>(order_key(value)) << 32) |
         (0xffffffffu - static_cast<uint32_t>(id));
}

float gumbel(uint64_t row_key, int64_t id) {
  return -std::log(-std::log(counter_random::sampling_uniform_at(row_key, id)));
}

// Ids of `ids` sorted most preferred first by `values`.
void sort_preferred(std::vector<int32_t>& ids, const float* values) {
  std::sort(ids.begin(), ids.end(), [values](int32_t a, int32_t b) {
    return rank_of(values[a], a) > rank_of(values[b], b);
  });
}

int32_t draw(const float* logits, int64_t vocab, const SamplingRow& row,
             const std::vector<uint8_t>& allowed) {
  const float temperature = row.temperature;
  std::vector<float> s(static_cast<size_t>(vocab));
  std::vector<int32_t> kept;
  for (int64_t id = 0; id < vocab; ++id) {
    s[id] = logits[id] / temperature;
    if (allowed[id] != 0) kept.push_back(static_cast<int32_t>(id));
  }
  if (row.min_p > 0.0f && !kept.empty()) {
    float max_s = -std::numeric_limits<float>::infinity();
    for (const int32_t id : kept) max_s = std::max(max_s, s[id]);
    const float threshold = max_s + std::log(row.min_p);
    std::erase_if(kept, [&](int32_t id) { return !(s[id] >= threshold); });
  }
  if (row.top_k > 0 && row.top_k < static_cast<int64_t>(kept.size())) {
    std::vector<int32_t> by_rank = kept;
    std::nth_element(by_rank.begin(), by_rank.begin() + (row.top_k - 1), by_rank.end(),
                     [&](int32_t a, int32_t b) { return rank_of(s[a], a) > rank_of(s[b], b); });
    const float threshold = s[by_rank[row.top_k - 1]];
    std::erase_if(kept, [&](int32_t id) { return !(s[id] >= threshold); });
  }
  if (row.top_p < 1.0f) {
    std::vector<int32_t> by_rank = kept;
    sort_preferred(by_rank, s.data());
    const float max_s = s[by_rank.front()];
    const auto weight = [&](int32_t id) {
      return s[id] == max_s ? 1.0 : std::exp(static_cast<double>(s[id] - max_s));
    };
    double total = 0;
    for (const int32_t id : by_rank) total += weight(id);
    const double target = static_cast<double>(row.top_p) * total;
    // The first group of equal s whose cumulative mass reaches the target sets the threshold.
    // (The last group always does: the sums are the same, in the same order.)
    double cumulative = 0;
    float threshold = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < by_rank.size(); ++i) {
      cumulative += weight(by_rank[i]);
      const bool group_end = i + 1 == by_rank.size() || s[by_rank[i + 1]] != s[by_rank[i]];
      if (group_end && cumulative >= target) {
        threshold = s[by_rank[i]];
        break;
      }
    }
    std::erase_if(kept, [&](int32_t id) { return !(s[id] >= threshold); });
  }
  const uint64_t row_key = counter_random::sampling_row_key(row.seed, row.counter);
  uint64_t best = 0;
  int32_t token = -1;
  for (const int32_t id : kept) {
    const uint64_t rank = rank_of(s[id] + gumbel(row_key, id), id);
    if (token < 0 || rank > best) {
      best = rank;
      token = id;
    }
  }
  return token;
}

void check_range(int32_t begin, int64_t words, int64_t num_ids, const char* what) {
  TIDAL_CHECK(begin >= 0 && words >= 0 && int64_t{begin} + words <= num_ids, "sample: ", what,
              " range [", begin, ", ", int64_t{begin} + words, ") outside the ", num_ids, " ids");
}

// The logits the draw sees: the raw row with the row's LogitAdjustment entries applied.
std::vector<float> adjusted_logits(const float* logits, int64_t vocab, const SamplingRow& row,
                                   const int32_t* ids) {
  std::vector<float> adjusted(logits, logits + vocab);
  for (int32_t i = 0; i < row.adjust_count; ++i) {
    LogitAdjustment entry;
    std::memcpy(static_cast<void*>(&entry), ids + row.adjust_begin + i * kLogitAdjustmentWords,
                sizeof(entry));
    if (entry.id < 0 || entry.id >= vocab) continue;
    float value = adjusted[entry.id] + entry.bias;
    if (entry.in_context != 0) {
      value = value > 0.0f ? value / row.repetition_penalty : value * row.repetition_penalty;
    }
    value -= row.frequency_penalty * static_cast<float>(entry.output_count) +
             (entry.output_count > 0 ? row.presence_penalty : 0.0f);
    adjusted[entry.id] = value;
  }
  return adjusted;
}

void sample_row(const float* raw_logits, int64_t vocab, const SamplingRow& row,
                const int32_t* banned, int64_t num_banned, SampledToken& out) {
  out = SampledToken{};
  check_range(row.banned_begin, row.banned_count, num_banned, "banned");
  check_range(row.allowed_begin, row.allowed_count, num_banned, "allowed");
  check_range(row.adjust_begin, int64_t{row.adjust_count} * kLogitAdjustmentWords, num_banned,
              "adjustment");
  std::vector<uint8_t> allowed(static_cast<size_t>(vocab), row.allowed_count > 0 ? 0 : 1);
  for (int32_t i = 0; i < row.allowed_count; ++i) {
    const int32_t id = banned[row.allowed_begin + i];
    if (id >= 0 && id < vocab) allowed[id] = 1;
  }
  for (int32_t i = 0; i < row.banned_count; ++i) {
    const int32_t id = banned[row.banned_begin + i];
    if (id >= 0 && id < vocab) allowed[id] = 0;
  }
  // The draw reads the adjusted logits; the logprobs below read the raw ones.
  std::vector<float> adjusted;
  if (row.adjust_count > 0) adjusted = adjusted_logits(raw_logits, vocab, row, banned);
  const float* logits = row.adjust_count > 0 ? adjusted.data() : raw_logits;
  if (std::find(allowed.begin(), allowed.end(), 1) == allowed.end()) {
    out.token = -1;
  } else if (!(row.temperature > 0.0f)) {
    uint64_t best = 0;
    for (int64_t id = 0; id < vocab; ++id) {
      const uint64_t rank = rank_of(logits[id], id);
      if (allowed[id] != 0 && (out.token < 0 || rank > best)) {
        best = rank;
        out.token = static_cast<int32_t>(id);
      }
    }
  } else {
    out.token = draw(logits, vocab, row, allowed);
  }
  if (row.num_top_logprobs < 0) return;

  float max_logit = -std::numeric_limits<float>::infinity();
  for (int64_t id = 0; id < vocab; ++id) max_logit = std::max(max_logit, raw_logits[id]);
  double total = 0;
  for (int64_t id = 0; id < vocab; ++id) {
    total += raw_logits[id] == max_logit
                 ? 1.0
                 : std::exp(static_cast<double>(raw_logits[id] - max_logit));
  }
  const double log_total = max_logit + std::log(total);
  const auto logprob = [&](int64_t id) { return static_cast<float>(raw_logits[id] - log_total); };
  if (out.token >= 0) out.logprob = logprob(out.token);
  const int64_t num_top = std::min<int64_t>({row.num_top_logprobs, kMaxTopLogprobs, vocab});
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + num_top, ids.end(), [&](int32_t a, int32_t b) {
    return rank_of(raw_logits[a], a) > rank_of(raw_logits[b], b);
  });
  out.num_top = static_cast<int32_t>(num_top);
  for (int64_t i = 0; i < num_top; ++i) {
    out.top_ids[i] = ids[i];
    out.top_logprobs[i] = logprob(ids[i]);
  }
}

}  // namespace

void sample(const SampleArgs& args) {
  for (int64_t r = 0; r < args.num_rows; ++r) {
    sample_row(args.logits + r * args.vocab, args.vocab, args.rows[r], args.banned, args.num_banned,
               args.out[r]);
  }
}

}  // namespace tidal::cpu
