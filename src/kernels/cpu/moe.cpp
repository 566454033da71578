// CPU reference kernels for the MoE block.
#include "kernels/cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/element.h"

namespace tidal::cpu {

void router_topk(const float* logits, int64_t num_tokens, int64_t num_experts, int64_t k,
                 bool renormalize, float* topk_weights, int32_t* topk_ids) {
  TIDAL_CHECK(k > 0 && k <= num_experts, "top-k of ", k, " over ", num_experts, " experts");
  thread_local std::vector<float> probs;
  thread_local std::vector<bool> taken;
  probs.resize(static_cast<size_t>(num_experts));
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = logits + t * num_experts;
    const float max_logit = *std::max_element(row, row + num_experts);
    float total = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
      probs[e] = std::exp(row[e] - max_logit);
      total += probs[e];
    }
    for (int64_t e = 0; e < num_experts; ++e) probs[e] /= total;
    taken.assign(static_cast<size_t>(num_experts), false);
    float chosen_total = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (!taken[e] && (best < 0 || probs[e] > probs[best])) best = e;
      }
      taken[best] = true;
      topk_ids[t * k + j] = static_cast<int32_t>(best);
      topk_weights[t * k + j] = probs[best];
      chosen_total += probs[best];
    }
    if (renormalize) {
      for (int64_t j = 0; j < k; ++j) topk_weights[t * k + j] /= chosen_total;
    }
  }
}

void moe_experts(const MoeExpertsArgs& args) {
  const int64_t hidden = args.hidden;
  const int64_t inter = args.intermediate;
  const size_t gate_up_slot_bytes =
      static_cast<size_t>(2 * inter * hidden) * dtype_size(args.weight_dtype);
  const size_t down_slot_bytes =
      static_cast<size_t>(hidden * inter) * dtype_size(args.weight_dtype);
  // Per (token, choice) expert outputs, summed in top-k order at the end.
  thread_local std::vector<float> expert_out, gate_up_rows, activated, assignment_x;
  thread_local std::vector<int64_t> assignments;
  expert_out.assign(static_cast<size_t>(args.num_tokens * args.k * hidden), 0.0f);
  for (int64_t slot = 0; slot < args.num_slots; ++slot) {
    assignments.clear();
    for (int64_t a = 0; a < args.num_tokens * args.k; ++a) {
      if (args.topk_slots[a] == slot) assignments.push_back(a);
    }
    if (assignments.empty()) continue;
    const auto count = static_cast<int64_t>(assignments.size());
    assignment_x.resize(static_cast<size_t>(count * hidden));
    for (int64_t i = 0; i < count; ++i) {
      std::copy_n(args.x + (assignments[i] / args.k) * hidden, hidden,
                  assignment_x.data() + i * hidden);
    }
    gate_up_rows.resize(static_cast<size_t>(count * 2 * inter));
    activated.resize(static_cast<size_t>(count * inter));
    const char* gate_up = static_cast<const char*>(args.gate_up) + slot * gate_up_slot_bytes;
    const char* down = static_cast<const char*>(args.down) + slot * down_slot_bytes;
    linear(assignment_x.data(), count, hidden, gate_up, args.weight_dtype, 2 * inter, nullptr,
           DType::kF32, gate_up_rows.data());
    silu_and_mul(gate_up_rows.data(), count, inter, activated.data());
    thread_local std::vector<float> down_rows;
    down_rows.resize(static_cast<size_t>(count * hidden));
    linear(activated.data(), count, inter, down, args.weight_dtype, hidden, nullptr, DType::kF32,
           down_rows.data());
    for (int64_t i = 0; i < count; ++i) {
      std::copy_n(down_rows.data() + i * hidden, hidden,
                  expert_out.data() + assignments[i] * hidden);
    }
  }
  // A slot < 0 (an assignment another rank serves) contributes nothing: its row stays zero and
  // so does its weight's product.
  moe_combine(expert_out.data(), args.topk_weights, args.num_tokens, args.k, hidden, args.out);
}

void moe_combine(const float* expert_out, const float* topk_weights, int64_t num_tokens, int64_t k,
                 int64_t hidden, float* out) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    float* row = out + t * hidden;
    std::fill_n(row, hidden, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const float weight = topk_weights[t * k + j];
      const float* y = expert_out + (t * k + j) * hidden;
      for (int64_t i = 0; i < hidden; ++i) row[i] += weight * y[i];
    }
  }
}

}  // namespace tidal::cpu
