// Backend::sample on the CPU reference, on hand-made logits: greedy ties and bans, top-k/top-p
// support, draws following the distribution and depending on (seed, counter) only, logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "common/counter_random.h"
#include "kernels/sampling_layout.h"

namespace tidal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Samples every row of `logits` ([rows.size(), vocab]) through the CPU backend.
std::vector<SampledToken> sample_rows(std::vector<float> logits, std::vector<SamplingRow> rows,
                                      std::vector<int32_t> banned = {}) {
  CpuBackend backend;
  const auto num_rows = static_cast<int64_t>(rows.size());
  std::vector<SampledToken> out(rows.size());
  const Tensor logits_tensor{.data = logits.data(),
                             .dtype = DType::kF32,
                             .shape = {num_rows, static_cast<int64_t>(logits.size()) / num_rows}};
  const Tensor rows_tensor{
      .data = rows.data(), .dtype = DType::kI32, .shape = {num_rows, kSamplingRowWords}};
  const Tensor banned_tensor{.data = banned.empty() ? nullptr : banned.data(),
                             .dtype = DType::kI32,
                             .shape = {static_cast<int64_t>(banned.size())}};
  const Tensor out_tensor{
      .data = out.data(), .dtype = DType::kI32, .shape = {num_rows, kSampledTokenWords}};
  backend.sample(logits_tensor, rows_tensor, banned_tensor, out_tensor);
  return out;
}

SampledToken sample_one(const std::vector<float>& logits, const SamplingRow& row,
                        const std::vector<int32_t>& banned = {}) {
  return sample_rows(logits, {row}, banned).front();
}

SamplingRow random_row(float temperature, uint64_t counter = 0) {
  return {.seed = 1234, .counter = counter, .temperature = temperature};
}

TEST(Sampler, GreedyTakesTheLowestIdAmongEqualMaxima) {
  const std::vector<float> logits = {0.5f, 2.0f, 1.0f, 2.0f};
  EXPECT_EQ(sample_one(logits, {}).token, 1);
  // -0 and +0 are the same value: the lower id wins.
  EXPECT_EQ(sample_one({-1.0f, 0.0f, -0.0f}, {}).token, 1);
  EXPECT_EQ(sample_one({-1.0f, -0.0f, 0.0f}, {}).token, 1);
  EXPECT_EQ(sample_one({-kInf, -kInf}, {}).token, 0);
}

TEST(Sampler, BannedIdsAreNeverChosen) {
  const std::vector<float> logits = {0.5f, 2.0f, 1.0f, 2.0f};
  const SamplingRow greedy{.banned_begin = 1, .banned_count = 1};
  EXPECT_EQ(sample_one(logits, greedy, {7, 1, 3}).token, 3);
  const SamplingRow both{.banned_begin = 1, .banned_count = 2};
  EXPECT_EQ(sample_one(logits, both, {7, 1, 3}).token, 2);
  // Ids outside the vocabulary are ignored.
  const SamplingRow outside{.banned_begin = 0, .banned_count = 1};
  EXPECT_EQ(sample_one(logits, outside, {7, 1, 3}).token, 1);
  for (uint64_t counter = 0; counter < 200; ++counter) {
    SamplingRow row = random_row(5.0f, counter);
    row.banned_count = 2;
    const int32_t token = sample_one(logits, row, {1, 3}).token;
    EXPECT_TRUE(token == 0 || token == 2) << token;
  }
}

TEST(Sampler, EveryIdBannedGivesMinusOne) {
  const std::vector<float> logits = {0.5f, 2.0f};
  SamplingRow row{.num_top_logprobs = 2, .banned_count = 3};
  SampledToken out = sample_one(logits, row, {1, 0, 1});
  EXPECT_EQ(out.token, -1);
  EXPECT_EQ(out.logprob, 0.0f);
  EXPECT_EQ(out.num_top, 2);  // the model's own top ids still come back
  EXPECT_EQ(out.top_ids[0], 1);
  row.temperature = 1.0f;
  row.top_k = 1;
  EXPECT_EQ(sample_one(logits, row, {1, 0, 1}).token, -1);
}

TEST(Sampler, ABannedRangeOutsideTheListIsAnError) {
  const SamplingRow row{.banned_begin = 1, .banned_count = 2};
  EXPECT_THROW(sample_one({0.0f, 1.0f}, row, {0, 1}), Error);
  EXPECT_THROW(sample_one({0.0f, 1.0f}, row), Error);
}

TEST(Sampler, TopKOfOneIsGreedy) {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.25f};
  for (uint64_t counter = 0; counter < 100; ++counter) {
    SamplingRow row = random_row(5.0f, counter);
    row.top_k = 1;
    EXPECT_EQ(sample_one(logits, row).token, 1);
  }
}

TEST(Sampler, TopKKeepsTiesAtTheBoundary) {
  // The 2nd largest is 0.3, held by ids 1 and 3: top_k = 2 keeps {0, 1, 3}.
  const std::vector<float> logits = {0.4f, 0.3f, 0.2f, 0.3f};
  std::set<int32_t> seen;
  for (uint64_t counter = 0; counter < 400; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    row.top_k = 2;
    seen.insert(sample_one(logits, row).token);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 3}));
}

TEST(Sampler, TopKOfOneKeepsEveryTieOfTheMaximum) {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.3f};
  std::set<int32_t> seen;
  for (uint64_t counter = 0; counter < 200; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    row.top_k = 1;
    seen.insert(sample_one(logits, row).token);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(Sampler, TinyTopPIsGreedy) {
  const std::vector<float> logits = {0.1f, 0.9f, 0.5f, 0.2f};
  for (const float top_p : {0.0f, 1e-6f, -1.0f}) {
    for (uint64_t counter = 0; counter < 100; ++counter) {
      SamplingRow row = random_row(3.0f, counter);
      row.top_p = top_p;
      EXPECT_EQ(sample_one(logits, row).token, 1);
    }
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  // Probabilities 0.5, 0.3, 0.2: top_p = 0.7 keeps {0, 1}; 0.8 exactly reached by {0, 1} too
  // (within rounding, so 0.79 here); 0.81 needs all three.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const auto support = [&](float top_p, int32_t top_k) {
    std::set<int32_t> seen;
    for (uint64_t counter = 0; counter < 600; ++counter) {
      SamplingRow row = random_row(1.0f, counter);
      row.top_p = top_p;
      row.top_k = top_k;
      seen.insert(sample_one(logits, row).token);
    }
    return seen;
  };
  EXPECT_EQ(support(0.7f, 0), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(support(0.79f, 0), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(support(0.81f, 0), (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(support(0.4f, 0), (std::set<int32_t>{0}));
  // Top-p over what top-k kept: of {0, 1} (renormalised 0.625, 0.375), 0.6 keeps only 0.
  EXPECT_EQ(support(0.6f, 2), (std::set<int32_t>{0}));
  EXPECT_EQ(support(0.7f, 2), (std::set<int32_t>{0, 1}));
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  // softmax(logits / 0.5) = 0.4, 0.3, 0.2, 0.1; 40000 counters, each frequency within 5 sigma.
  const std::vector<double> probs = {0.4, 0.3, 0.2, 0.1};
  std::vector<float> logits;
  for (const double p : probs) logits.push_back(static_cast<float>(0.5 * std::log(p)));
  const int draws = 40000;
  std::vector<SamplingRow> rows;
  for (int i = 0; i < draws; ++i) rows.push_back(random_row(0.5f, static_cast<uint64_t>(i)));
  std::vector<float> batch;
  for (int i = 0; i < draws; ++i) batch.insert(batch.end(), logits.begin(), logits.end());
  std::vector<int> counts(probs.size(), 0);
  for (const SampledToken& out : sample_rows(batch, rows)) ++counts.at(out.token);
  for (size_t i = 0; i < probs.size(); ++i) {
    const double sigma = std::sqrt(probs[i] * (1 - probs[i]) / draws);
    EXPECT_NEAR(counts[i] / double(draws), probs[i], 5 * sigma) << "token " << i;
  }
}

TEST(Sampler, TheDrawDependsOnSeedAndCounterOnly) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  std::set<int32_t> over_counters;
  std::set<int32_t> over_seeds;
  for (uint64_t counter = 0; counter < 64; ++counter) {
    const SamplingRow row = random_row(1.0f, counter);
    const int32_t token = sample_one(logits, row).token;
    // The same (seed, counter) in another batch, at another row: the same token.
    const std::vector<SampledToken> batch = sample_rows(
        [&] {
          std::vector<float> two = {9.0f, 0, 0, 0, 0, 0, 0, 0};
          two.insert(two.end(), logits.begin(), logits.end());
          return two;
        }(),
        {random_row(1.0f, counter + 1000), row});
    EXPECT_EQ(batch[1].token, token);
    over_counters.insert(token);
    SamplingRow reseeded = row;
    reseeded.seed = counter;
    reseeded.counter = 0;
    over_seeds.insert(sample_one(logits, reseeded).token);
  }
  EXPECT_GE(over_counters.size(), 6u);
  EXPECT_GE(over_seeds.size(), 6u);
}

TEST(Sampler, TheUniformIsExactAndInsideTheUnitInterval) {
  for (uint64_t id = 0; id < 100000; ++id) {
    const float u = counter_random::sampling_uniform(id * 31, id % 7, static_cast<int64_t>(id));
    ASSERT_GT(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    ASSERT_TRUE(std::isfinite(-std::log(-std::log(static_cast<double>(u)))));
  }
  static_assert(counter_random::sampling_uniform(1, 2, 3) ==
                counter_random::sampling_uniform_at(counter_random::sampling_row_key(1, 2), 3));
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfRawLogits) {
  // Temperature does not change the logprobs; banned ids still count.
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  const double total = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0);
  const double log_total = std::log(total);
  SamplingRow row{.num_top_logprobs = 3, .banned_count = 1};
  SampledToken out = sample_one(logits, row, {1});
  EXPECT_EQ(out.token, 3);
  EXPECT_NEAR(out.logprob, 3.0 - log_total, 1e-6);
  ASSERT_EQ(out.num_top, 3);
  EXPECT_EQ(out.top_ids[0], 1);  // ties: the lower id first
  EXPECT_EQ(out.top_ids[1], 3);
  EXPECT_EQ(out.top_ids[2], 2);
  EXPECT_NEAR(out.top_logprobs[0], 3.0 - log_total, 1e-6);
  EXPECT_NEAR(out.top_logprobs[1], 3.0 - log_total, 1e-6);
  EXPECT_NEAR(out.top_logprobs[2], 2.0 - log_total, 1e-6);
  EXPECT_EQ(out.top_ids[3], 0);  // unused entries are zero

  row.temperature = 0.25f;
  row.num_top_logprobs = 0;
  out = sample_one(logits, row, {1});
  EXPECT_EQ(out.num_top, 0);
  EXPECT_NEAR(out.logprob, logits[out.token] - log_total, 1e-6);

  // More than the vocabulary, more than the limit.
  row.banned_count = 0;
  row.num_top_logprobs = 50;
  EXPECT_EQ(sample_one(logits, row).num_top, 4);
  EXPECT_EQ(sample_one(std::vector<float>(64, 0.0f), row).num_top, kMaxTopLogprobs);

  // No logprobs asked: zero.
  row.num_top_logprobs = -1;
  out = sample_one(logits, row);
  EXPECT_EQ(out.logprob, 0.0f);
  EXPECT_EQ(out.num_top, 0);
}

TEST(Sampler, InfiniteLogits) {
  // +inf wins greedy and the draw; -inf is never drawn while anything finite is kept.
  const std::vector<float> logits = {-kInf, 1.0f, kInf, 0.0f};
  EXPECT_EQ(sample_one(logits, {}).token, 2);
  for (uint64_t counter = 0; counter < 50; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    row.top_p = 0.9f;
    EXPECT_EQ(sample_one(logits, row).token, 2);
  }
  for (uint64_t counter = 0; counter < 50; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    row.banned_count = 1;
    EXPECT_NE(sample_one(logits, row, {2}).token, 0);
  }
}

TEST(Sampler, BadArgumentsThrow) {
  CpuBackend backend;
  std::vector<float> logits(8, 0.0f);
  std::vector<SamplingRow> rows(2);
  std::vector<SampledToken> out(2);
  const Tensor logits_tensor{.data = logits.data(), .dtype = DType::kF32, .shape = {2, 4}};
  const Tensor rows_tensor{
      .data = rows.data(), .dtype = DType::kI32, .shape = {2, kSamplingRowWords}};
  const Tensor out_tensor{
      .data = out.data(), .dtype = DType::kI32, .shape = {2, kSampledTokenWords}};
  EXPECT_NO_THROW(backend.sample(logits_tensor, rows_tensor, {}, out_tensor));
  EXPECT_THROW(backend.sample(logits_tensor, rows_tensor.reshaped({20}), {}, out_tensor), Error);
  EXPECT_THROW(backend.sample(logits_tensor.rows(0, 1), rows_tensor, {}, out_tensor), Error);
  Tensor bf16 = logits_tensor;
  bf16.dtype = DType::kBF16;
  EXPECT_THROW(backend.sample(bf16, rows_tensor, {}, out_tensor), Error);
}

// The ids buffer of an adjusted row: `entries` as LogitAdjustment words.
std::vector<int32_t> adjustment_words(const std::vector<LogitAdjustment>& entries) {
  std::vector<int32_t> words(entries.size() * kLogitAdjustmentWords);
  std::memcpy(words.data(), entries.data(), entries.size() * sizeof(LogitAdjustment));
  return words;
}

TEST(Sampler, LogitBiasMovesTheDrawButNotTheLogprobs) {
  const std::vector<float> logits = {3.0f, 1.0f, 0.0f};
  const std::vector<int32_t> ids = adjustment_words({{.id = 2, .bias = 5.0f}});
  const SamplingRow row{.num_top_logprobs = 1, .adjust_begin = 0, .adjust_count = 1};
  const SampledToken biased = sample_one(logits, row, ids);
  EXPECT_EQ(biased.token, 2);  // 0 + 5 beats 3
  const SampledToken plain = sample_one(logits, {.num_top_logprobs = 1});
  EXPECT_EQ(plain.token, 0);
  // The raw distribution's logprobs, with or without the bias.
  EXPECT_EQ(biased.top_ids[0], 0);
  EXPECT_FLOAT_EQ(biased.top_logprobs[0], plain.top_logprobs[0]);
  EXPECT_FLOAT_EQ(biased.logprob, plain.top_logprobs[0] - 3.0f);
}

TEST(Sampler, PenaltiesFollowVllmsDefinitions) {
  // id 0 (logit 2) and id 1 (logit -1) are in the context; id 0 was output twice.
  const std::vector<float> logits = {2.0f, -1.0f, 1.5f, 1.2f};
  const std::vector<int32_t> ids =
      adjustment_words({{.id = 0, .output_count = 2, .in_context = 1}, {.id = 1, .in_context = 1}});
  const auto greedy_with = [&](float repetition, float frequency, float presence) {
    return sample_one(logits,
                      {.presence_penalty = presence,
                       .frequency_penalty = frequency,
                       .repetition_penalty = repetition,
                       .adjust_begin = 0,
                       .adjust_count = 2},
                      ids)
        .token;
  };
  EXPECT_EQ(greedy_with(1.0f, 0.0f, 0.0f), 0);
  EXPECT_EQ(greedy_with(1.5f, 0.0f, 0.0f), 2);  // 2 / 1.5 = 1.33 < 1.5
  EXPECT_EQ(greedy_with(1.2f, 0.0f, 0.0f), 0);  // 2 / 1.2 = 1.67 > 1.5
  EXPECT_EQ(greedy_with(1.0f, 0.3f, 0.0f), 2);  // 2 - 0.6 = 1.4 < 1.5
  EXPECT_EQ(greedy_with(1.0f, 0.2f, 0.0f), 0);  // 2 - 0.4 = 1.6
  EXPECT_EQ(greedy_with(1.0f, 0.0f, 0.6f), 2);  // 2 - 0.6 (once, whatever the count)
  // A negative logit is multiplied: -1 * 4 pushes id 1 further down; with every other id banned
  // it is still drawn.
  const std::vector<int32_t> banned_and_ids = [&] {
    std::vector<int32_t> all = {0, 2, 3};
    all.insert(all.end(), ids.begin(), ids.end());
    return all;
  }();
  EXPECT_EQ(sample_one(logits,
                       {.banned_begin = 0,
                        .banned_count = 3,
                        .repetition_penalty = 4.0f,
                        .adjust_begin = 3,
                        .adjust_count = 2},
                       banned_and_ids)
                .token,
            1);
}

TEST(Sampler, AllowedIdsNarrowTheDraw) {
  const std::vector<float> logits = {3.0f, 1.0f, 2.0f, 0.0f};
  const std::vector<int32_t> ids = {3, 1};
  EXPECT_EQ(sample_one(logits, {.allowed_begin = 0, .allowed_count = 2}, ids).token, 1);
  for (uint64_t counter = 0; counter < 64; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    row.allowed_begin = 0;
    row.allowed_count = 2;
    const int32_t token = sample_one(logits, row, ids).token;
    EXPECT_TRUE(token == 1 || token == 3) << token;
  }
}

TEST(Sampler, MinPDropsWhatIsLessLikelyThanItsShareOfTheBest) {
  // Probabilities at temperature 1: e^0 : e^-1 : e^-3 (relative to the best).
  const std::vector<float> logits = {5.0f, 4.0f, 2.0f};
  std::set<int32_t> drawn_without, drawn_with;
  for (uint64_t counter = 0; counter < 400; ++counter) {
    SamplingRow row = random_row(1.0f, counter);
    drawn_without.insert(sample_one(logits, row).token);
    row.min_p = 0.3f;  // keeps p >= 0.3 p_max: e^-1 = 0.37 stays, e^-3 = 0.05 goes
    drawn_with.insert(sample_one(logits, row).token);
  }
  EXPECT_EQ(drawn_without, (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(drawn_with, (std::set<int32_t>{0, 1}));
}

TEST(Sampler, AdjustedRangesOutsideTheIdsAreErrors) {
  EXPECT_THROW(sample_one({1.0f, 2.0f}, {.adjust_begin = 0, .adjust_count = 1}, {0, 0}), Error);
  EXPECT_THROW(sample_one({1.0f, 2.0f}, {.allowed_begin = 1, .allowed_count = 2}, {0, 1}), Error);
}

}  // namespace
}  // namespace tidal
