// The shape check of Backend::qk_norm_rope_store, shared by every backend so they refuse the same
// calls with the same words (dtypes are each backend's own).
#pragma once

#include <cstdint>

#include "backend/backend.h"
#include "common/error.h"

namespace tidal {

// Throws tidal::Error unless q is [tokens, heads, head_dim], k and v [tokens, num_kv_heads,
// head_dim] as the cache's, one position and one slot per token, and both norm weights
// [head_dim]. Returns the token count.
inline int64_t check_qk_norm_rope_store_shapes(const Tensor& q, const Tensor& k, const Tensor& v,
                                               const Tensor& q_norm_weight,
                                               const Tensor& k_norm_weight, const Tensor& positions,
                                               const Tensor& slot_mapping, int64_t num_kv_heads,
                                               int64_t head_dim) {
  TIDAL_CHECK(q.shape.size() == 3 && k.shape.size() == 3 && k.shape == v.shape &&
                  q.dim(0) == k.dim(0) && q.dim(2) == head_dim && k.dim(1) == num_kv_heads &&
                  k.dim(2) == head_dim,
              "qk_norm_rope_store: q [tokens, heads, head_dim], k and v [tokens, kv_heads, "
              "head_dim] as the cache");
  const int64_t tokens = q.dim(0);
  TIDAL_CHECK(positions.num_elements() == tokens && slot_mapping.num_elements() == tokens,
              "qk_norm_rope_store: ", positions.num_elements(), " positions and ",
              slot_mapping.num_elements(), " slots for ", tokens, " tokens");
  TIDAL_CHECK(q_norm_weight.num_elements() == head_dim && k_norm_weight.num_elements() == head_dim,
              "qk_norm_rope_store: norm weights must be [head_dim]");
  return tokens;
}

}  // namespace tidal
