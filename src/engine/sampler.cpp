// Sampling and logprobs on host logits.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace tidal {
namespace {

bool is_banned(int32_t id, std::span<const int32_t> banned) {
  return std::find(banned.begin(), banned.end(), id) != banned.end();
}

}  // namespace

int32_t sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::mt19937_64& rng, std::span<const int32_t> banned) {
  const auto vocab = static_cast<int32_t>(logits.size());
  if (params.greedy()) {
    int32_t best = -1;
    for (int32_t i = 0; i < vocab; ++i) {
      if (is_banned(i, banned)) continue;
      if (best < 0 || logits[i] > logits[best]) best = i;
    }
    return best;
  }
  // Candidates sorted by logit, most likely first (ties: lower id first).
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::erase_if(order, [&](int32_t id) { return is_banned(id, banned); });
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < order.size()) {
    order.resize(static_cast<size_t>(params.top_k));
  }
  std::vector<double> probs(order.size());
  const double max_scaled = logits[order.front()] / params.temperature;
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    probs[i] = std::exp(logits[order[i]] / params.temperature - max_scaled);
    total += probs[i];
  }
  size_t keep = order.size();
  if (params.top_p < 1.0f) {
    double cumulative = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double kept_total =
      std::accumulate(probs.begin(), probs.begin() + static_cast<long>(keep), 0.0);
  const double draw = std::uniform_real_distribution<double>(0.0, kept_total)(rng);
  double cumulative = 0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (draw < cumulative) return order[i];
  }
  return order[keep - 1];
}

TokenLogprob compute_logprobs(std::span<const float> logits, int32_t token, int32_t top_n) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (const float logit : logits) total += std::exp(static_cast<double>(logit - max_logit));
  const auto log_total = static_cast<float>(std::log(total));
  auto logprob_of = [&](int32_t id) { return logits[id] - max_logit - log_total; };

  TokenLogprob result{.token_id = token, .logprob = logprob_of(token), .top = {}};
  if (top_n > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto n = std::min<size_t>(static_cast<size_t>(top_n), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(n), ids.end(),
                      [&](int32_t a, int32_t b) {
                        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                      });
    for (size_t i = 0; i < n; ++i) result.top.emplace_back(ids[i], logprob_of(ids[i]));
  }
  return result;
}

}  // namespace tidal
