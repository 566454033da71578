// CPU reference kernels for attention, and Qwen3's q/k norm + RoPE + KV store chain fused per
// token.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/element.h"

namespace tidal::cpu {

namespace {

// Computed in f32 as Hugging Face does: inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq.
void rope_inv_freq(int64_t head_dim, double theta, std::vector<float>& inv_freq) {
  const int64_t half = head_dim / 2;
  inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta),
                                  static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
}

// One token's heads [num_heads, head_dim], rotated in place.
void rope_token(float* x, int64_t num_heads, int64_t head_dim, int32_t position,
                const std::vector<float>& inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(position) * inv_freq[i];
    const float cosine = std::cos(angle);
    const float sine = std::sin(angle);
    for (int64_t h = 0; h < num_heads; ++h) {
      float* row = x + h * head_dim;
      const float first = row[i];
      const float second = row[i + half];
      row[i] = first * cosine - second * sine;
      row[i + half] = second * cosine + first * sine;
    }
  }
}

// out = sum_j softmax(scores)_j * value(j) over the first `count` scores (exp of score - max,
// divided by their total, summed in j order), `width` floats: attention's last two steps.
template <typename Value>
void softmax_weighted_sum(std::vector<float>& scores, int64_t count, float max_score, Value value,
                          int64_t width, float* out) {
  float total = 0;
  for (int64_t j = 0; j < count; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    total += scores[j];
  }
  std::fill_n(out, width, 0.0f);
  for (int64_t j = 0; j < count; ++j) {
    const float* row = value(j);
    const float weight = scores[j] / total;
    for (int64_t d = 0; d < width; ++d) out[d] += weight * row[d];
  }
}

void check_slot(int64_t slot, const PagedKvLayout& layout) {
  const int64_t num_slots = layout.num_blocks * layout.block_size;
  TIDAL_CHECK(slot < num_slots, "KV slot ", slot, " outside the cache of ", num_slots, " slots");
}

}  // namespace

void rope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
          const int32_t* positions, double theta) {
  thread_local std::vector<float> inv_freq;
  rope_inv_freq(head_dim, theta, inv_freq);
  for (int64_t t = 0; t < num_tokens; ++t) {
    rope_token(x + t * num_heads * head_dim, num_heads, head_dim, positions[t], inv_freq);
  }
}

void rope_pairs(float* x, int64_t num_tokens, int64_t num_heads, int64_t dim,
                const int32_t* positions, const float* inv_freq, float factor) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t i = 0; i < dim / 2; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      const float cosine = std::cos(angle) * factor;
      const float sine = std::sin(angle) * factor;
      for (int64_t h = 0; h < num_heads; ++h) {
        float* pair = x + (t * num_heads + h) * dim + 2 * i;
        const float first = pair[0];
        const float second = pair[1];
        pair[0] = first * cosine - second * sine;
        pair[1] = second * cosine + first * sine;
      }
    }
  }
}

void store_kv(const float* k, const float* v, int64_t num_tokens, const int32_t* slot_mapping,
              int64_t num_slots, int64_t key_width, int64_t value_width, float* key_cache,
              float* value_cache) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;  // padding token: nothing to store
    TIDAL_CHECK(slot < num_slots, "KV slot ", slot, " outside the cache of ", num_slots, " slots");
    std::copy_n(k + t * key_width, key_width, key_cache + slot * key_width);
    std::copy_n(v + t * value_width, value_width, value_cache + slot * value_width);
  }
}

void qk_norm_rope_store(const QkNormRopeStoreArgs& args) {
  const PagedKvLayout& layout = args.layout;
  const int64_t head_dim = layout.head_dim;
  const int64_t q_width = args.num_heads * head_dim;
  const int64_t kv_width = layout.num_kv_heads * head_dim;
  thread_local std::vector<float> q_weight;
  thread_local std::vector<float> k_weight;
  thread_local std::vector<float> inv_freq;
  q_weight.resize(static_cast<size_t>(head_dim));
  k_weight.resize(static_cast<size_t>(head_dim));
  row_to_f32(args.q_norm, args.q_norm_dtype, head_dim, q_weight.data());
  row_to_f32(args.k_norm, args.k_norm_dtype, head_dim, k_weight.data());
  rope_inv_freq(head_dim, args.theta, inv_freq);
  for (int64_t t = 0; t < args.num_tokens; ++t) {
    float* q = args.q + t * q_width;
    float* k = args.k + t * kv_width;
    for (int64_t h = 0; h < args.num_heads; ++h) {
      rms_norm_row(q + h * head_dim, head_dim, q_weight.data(), args.eps, q + h * head_dim);
    }
    for (int64_t h = 0; h < layout.num_kv_heads; ++h) {
      rms_norm_row(k + h * head_dim, head_dim, k_weight.data(), args.eps, k + h * head_dim);
    }
    rope_token(q, args.num_heads, head_dim, args.positions[t], inv_freq);
    rope_token(k, layout.num_kv_heads, head_dim, args.positions[t], inv_freq);
    const int64_t slot = args.slot_mapping[t];
    if (slot < 0) continue;  // padding token: nothing to store
    check_slot(slot, layout);
    std::copy_n(k, kv_width, args.key_cache + slot * kv_width);
    std::copy_n(args.v + t * kv_width, kv_width, args.value_cache + slot * kv_width);
  }
}

void paged_attention(const PagedAttentionArgs& args) {
  const PagedKvLayout& layout = args.layout;
  const int64_t head_dim = layout.head_dim;
  const int64_t group = args.num_heads / layout.num_kv_heads;
  const int64_t kv_width = layout.num_kv_heads * head_dim;
  thread_local std::vector<float> scores;
  for (int64_t s = 0; s < args.num_seqs; ++s) {
    const int64_t first_row = args.query_start[s];
    const int64_t num_queries = args.query_start[s + 1] - first_row;
    const int64_t context = args.context_lens[s];
    const int32_t* blocks = args.block_tables + s * args.max_blocks_per_seq;
    scores.resize(static_cast<size_t>(context));
    for (int64_t i = 0; i < num_queries; ++i) {
      const int64_t visible = context - num_queries + i + 1;
      for (int64_t h = 0; h < args.num_heads; ++h) {
        const float* query = args.q + ((first_row + i) * args.num_heads + h) * head_dim;
        const int64_t kv_head = h / group;
        float max_score = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const int64_t slot =
              blocks[j / layout.block_size] * layout.block_size + j % layout.block_size;
          const float* key = args.key_cache + slot * kv_width + kv_head * head_dim;
          scores[j] = dot(query, key, head_dim) * args.scale;
          max_score = std::max(max_score, scores[j]);
        }
        softmax_weighted_sum(
            scores, visible, max_score,
            [&](int64_t j) {
              const int64_t slot =
                  blocks[j / layout.block_size] * layout.block_size + j % layout.block_size;
              return args.value_cache + slot * kv_width + kv_head * head_dim;
            },
            head_dim, args.out + ((first_row + i) * args.num_heads + h) * head_dim);
      }
    }
  }
}

void latent_attention(const LatentAttentionArgs& args) {
  const int64_t latent_dim = args.latent_dim;
  const int64_t rope_dim = args.rope_dim;
  thread_local std::vector<float> scores;
  for (int64_t s = 0; s < args.num_seqs; ++s) {
    const int64_t first_row = args.query_start[s];
    const int64_t num_queries = args.query_start[s + 1] - first_row;
    const int64_t context = args.context_lens[s];
    const int32_t* blocks = args.block_tables + s * args.max_blocks_per_seq;
    scores.resize(static_cast<size_t>(context));
    for (int64_t i = 0; i < num_queries; ++i) {
      const int64_t visible = context - num_queries + i + 1;
      for (int64_t h = 0; h < args.num_heads; ++h) {
        const int64_t row = (first_row + i) * args.num_heads + h;
        const float* q_latent = args.q_latent + row * latent_dim;
        const float* q_rope = args.q_rope + row * rope_dim;
        float max_score = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const int64_t slot = blocks[j / args.block_size] * args.block_size + j % args.block_size;
          scores[j] = (dot(q_latent, args.latent_cache + slot * latent_dim, latent_dim) +
                       dot(q_rope, args.rope_cache + slot * rope_dim, rope_dim)) *
                      args.scale;
          max_score = std::max(max_score, scores[j]);
        }
        softmax_weighted_sum(
            scores, visible, max_score,
            [&](int64_t j) {
              return args.latent_cache +
                     (blocks[j / args.block_size] * args.block_size + j % args.block_size) *
                         latent_dim;
            },
            latent_dim, args.out + row * latent_dim);
      }
    }
  }
}

}  // namespace tidal::cpu
