// CPU reference kernels for the MoE block.
#include "kernels/cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/dense.h"
#include "kernels/cpu/element.h"

namespace tidal::cpu {

void router_topk(const RouterTopkArgs& args) {
  const int64_t experts = args.num_experts;
  const int64_t k = args.k;
  TIDAL_CHECK(k > 0 && k <= experts, "top-k of ", k, " over ", experts, " experts");
  TIDAL_CHECK(args.num_groups > 0 && experts % args.num_groups == 0 && args.topk_groups > 0 &&
                  args.topk_groups <= args.num_groups,
              "router groups: ", args.topk_groups, " of ", args.num_groups, " over ", experts,
              " experts");
  const int64_t group_size = experts / args.num_groups;
  TIDAL_CHECK(!args.group_score_top2_sum || group_size >= 2,
              "a group score of the two best experts needs groups of two or more");
  TIDAL_CHECK(k <= args.topk_groups * group_size, "top-k of ", k, " from ", args.topk_groups,
              " groups of ", group_size, " experts");
  thread_local std::vector<float> scores, selection, group_scores;
  thread_local std::vector<bool> eligible, kept;
  scores.resize(static_cast<size_t>(experts));
  selection.resize(static_cast<size_t>(experts));
  group_scores.resize(static_cast<size_t>(args.num_groups));
  for (int64_t t = 0; t < args.num_tokens; ++t) {
    const float* row = args.logits + t * experts;
    if (args.sigmoid) {
      for (int64_t e = 0; e < experts; ++e) scores[e] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      const float max_logit = *std::max_element(row, row + experts);
      float total = 0;
      for (int64_t e = 0; e < experts; ++e) {
        scores[e] = std::exp(row[e] - max_logit);
        total += scores[e];
      }
      for (int64_t e = 0; e < experts; ++e) scores[e] /= total;
    }
    for (int64_t e = 0; e < experts; ++e) {
      selection[e] = scores[e] + (args.selection_bias != nullptr ? args.selection_bias[e] : 0.0f);
    }
    eligible.assign(static_cast<size_t>(experts), true);
    if (args.num_groups > 1) {
      for (int64_t g = 0; g < args.num_groups; ++g) {
        float best = -INFINITY;
        float second = -INFINITY;
        for (int64_t e = g * group_size; e < (g + 1) * group_size; ++e) {
          if (selection[e] > best) {
            second = best;
            best = selection[e];
          } else if (selection[e] > second) {
            second = selection[e];
          }
        }
        group_scores[g] = args.group_score_top2_sum ? best + second : best;
      }
      kept.assign(static_cast<size_t>(args.num_groups), false);
      for (int64_t picked = 0; picked < args.topk_groups; ++picked) {
        int64_t best = -1;
        for (int64_t g = 0; g < args.num_groups; ++g) {
          if (!kept[g] && (best < 0 || group_scores[g] > group_scores[best])) best = g;
        }
        kept[best] = true;
      }
      for (int64_t e = 0; e < experts; ++e) eligible[e] = kept[e / group_size];
    }
    float chosen_total = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < experts; ++e) {
        if (eligible[e] && (best < 0 || selection[e] > selection[best])) best = e;
      }
      eligible[best] = false;
      args.topk_ids[t * k + j] = static_cast<int32_t>(best);
      args.topk_weights[t * k + j] = scores[best];
      chosen_total += scores[best];
    }
    for (int64_t j = 0; j < k; ++j) {
      float& weight = args.topk_weights[t * k + j];
      if (args.renormalize) weight /= chosen_total;
      weight *= args.scaling;
    }
  }
}

void moe_experts(const MoeExpertsArgs& args) {
  const int64_t hidden = args.hidden;
  const int64_t inter = args.intermediate;
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
    linear(assignment_x.data(), count, args.gate_up.matrix(slot), nullptr, DType::kF32,
           gate_up_rows.data());
    silu_and_mul(gate_up_rows.data(), count, inter, activated.data());
    thread_local std::vector<float> down_rows;
    down_rows.resize(static_cast<size_t>(count * hidden));
    linear(activated.data(), count, args.down.matrix(slot), nullptr, DType::kF32, down_rows.data());
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
