// The sampler on hand-made logits: greedy ties, top-k/top-p support, seeded draws following the
// distribution, banned tokens, and logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "engine/sampler.h"

namespace tidal {
namespace {

SamplingParams with_temperature(float temperature) {
  SamplingParams params;
  params.temperature = temperature;
  return params;
}

TEST(Sampler, GreedyTakesTheLowestIdAmongEqualMaxima) {
  std::mt19937_64 rng(1);
  const std::vector<float> logits = {0.5f, 2.0f, 1.0f, 2.0f};
  EXPECT_EQ(sample_token(logits, with_temperature(0), rng, {}), 1);
  const std::vector<int32_t> banned = {1};
  EXPECT_EQ(sample_token(logits, with_temperature(0), rng, banned), 3);
}

TEST(Sampler, TopKOfOneIsGreedy) {
  std::mt19937_64 rng(3);
  SamplingParams params = with_temperature(5.0f);
  params.top_k = 1;
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits, params, rng, {}), 1);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  // Probabilities 0.5, 0.3, 0.2: top_p = 0.7 keeps {0, 1} only.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams params = with_temperature(1.0f);
  params.top_p = 0.7f;
  std::mt19937_64 rng(11);
  std::set<int32_t> seen;
  for (int i = 0; i < 500; ++i) seen.insert(sample_token(logits, params, rng, {}));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(Sampler, DrawsFollowTheDistribution) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  std::mt19937_64 rng(42);
  std::vector<int> counts(3, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[sample_token(logits, with_temperature(1.0f), rng, {})];
  EXPECT_NEAR(counts[0] / double(draws), 0.6, 0.02);
  EXPECT_NEAR(counts[1] / double(draws), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(draws), 0.1, 0.02);
}

TEST(Sampler, SameSeedSameDraws) {
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  std::mt19937_64 first(7), second(7);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(sample_token(logits, with_temperature(1.0f), first, {}),
              sample_token(logits, with_temperature(1.0f), second, {}));
  }
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfRawLogits) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f};
  const TokenLogprob result = compute_logprobs(logits, 2, 2);
  const double total = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(result.logprob, 2.0 - std::log(total), 1e-6);
  ASSERT_EQ(result.top.size(), 2u);
  EXPECT_EQ(result.top[0].first, 1);
  EXPECT_EQ(result.top[1].first, 2);
  EXPECT_NEAR(result.top[0].second, 3.0 - std::log(total), 1e-6);
}

}  // namespace
}  // namespace tidal
