// The argument check of Backend::route_experts, shared by every backend so they refuse the same
// calls with the same words.
#pragma once

#include <initializer_list>

#include "backend/backend.h"
#include "common/error.h"

namespace tidal {

// Throws tidal::Error unless every tensor is I32 and the shapes are those route_experts names:
// ids [T, k], replica tables [E] and [E, width], blocks of num_ranks x capacity rows, a position
// per choice, and the optional token ids [T] and load counts [E].
inline void check_route_experts_args(const Tensor& topk_ids, const ExpertRoute& route,
                                     const Tensor& send_tokens, const Tensor& send_slots,
                                     const Tensor& positions) {
  const bool has_token_ids = route.token_ids.data != nullptr;
  const bool has_load_counts = route.load_counts.data != nullptr;
  for (const Tensor* tensor : {&topk_ids, &route.replica_count, &route.replica_slots, &send_tokens,
                               &send_slots, &positions}) {
    TIDAL_CHECK(tensor->dtype == DType::kI32,
                "route_experts: ids, tables and outputs must be I32, got ",
                dtype_name(tensor->dtype));
  }
  TIDAL_CHECK(!has_token_ids || route.token_ids.dtype == DType::kI32,
              "route_experts: token ids must be I32, got ", dtype_name(route.token_ids.dtype));
  TIDAL_CHECK(!has_load_counts || route.load_counts.dtype == DType::kI32,
              "route_experts: load counts must be I32, got ", dtype_name(route.load_counts.dtype));
  const int64_t blocks = route.num_ranks * route.capacity;
  TIDAL_CHECK(topk_ids.shape.size() == 2 && route.replica_slots.shape.size() == 2 &&
                  route.replica_slots.dim(0) == route.replica_count.num_elements() &&
                  send_tokens.num_elements() == blocks && send_slots.num_elements() == blocks &&
                  positions.num_elements() == topk_ids.num_elements() && route.slots_per_rank > 0,
              "route_experts: ids [tokens, k], replica tables [E] and [E, width], blocks of ",
              route.num_ranks, " x ", route.capacity, " rows, a position per choice");
  TIDAL_CHECK(!has_token_ids || route.token_ids.num_elements() == topk_ids.dim(0),
              "route_experts: one token id per token");
  TIDAL_CHECK(
      !has_load_counts || route.load_counts.num_elements() == route.replica_count.num_elements(),
      "route_experts: one load count per expert");
}

}  // namespace tidal
