// ForwardBatch: one step's flattened tokens and where they go, as device tensors.
#pragma once

#include "backend/backend.h"

namespace tidal {

struct ForwardBatch {
  Tensor token_ids;     // [tokens] I32
  Tensor positions;     // [tokens] I32
  Tensor slot_mapping;  // [tokens] I32: KV cache slot of each token (-1: padding)
  AttentionInputs attention;
  Tensor sample_rows;  // [num_samples] I32: the rows whose logits the step returns
  int64_t num_tokens() const { return token_ids.num_elements(); }
};

}  // namespace tidal
