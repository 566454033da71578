// ExpertParallelExecutor: dispatch by all-to-all, local experts, combine by all-to-all.
#include "engine/expert_parallel.h"

#include <algorithm>
#include <span>
#include <vector>

namespace tidal {

ExpertParallelExecutor::ExpertParallelExecutor(Communicator& group,
                                               const std::vector<eplb::PlacementTables>& tables,
                                               eplb::TableShape shape, int64_t max_tokens_per_rank)
    : group_(&group), tables_(&tables), shape_(shape), max_tokens_per_rank_(max_tokens_per_rank) {
  TIDAL_CHECK(!tables.empty(), "expert parallelism needs placement tables");
}

Tensor ExpertParallelExecutor::run(Backend& backend, Workspace& workspace, int64_t moe_layer,
                                   const Tensor& x, const Tensor& topk_ids,
                                   const Tensor& topk_weights, const ExpertSlots& slots) {
  // Routing runs on the host. With host-addressable tensors (CPU, Gloo) everything is read and
  // written in place. Otherwise (CUDA, NCCL) the ids come to the host (copy_to_host waits for the
  // stream: one synchronisation per MoE layer in this first version), the index arrays go up into
  // workspace tensors, and the all-to-alls move device memory on the backend's stream.
  const bool host = backend.shares_host_memory();
  Communicator& group = *group_;
  const int num_ranks = group.size();
  const int64_t tokens = x.dim(0);
  const int64_t hidden = x.dim(1);
  const int64_t k = topk_ids.dim(1);
  const int64_t assignments = tokens * k;
  const int64_t capacity = static_cast<int64_t>(num_ranks) * max_tokens_per_rank_ * k;
  TIDAL_CHECK(tokens <= max_tokens_per_rank_, "a step of ", tokens,
              " tokens exceeds the expert-parallel capacity of ", max_tokens_per_rank_);
  const DType act = backend.activation_dtype();
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(act);

  // Route every (token, choice) to a replica; order the rows by destination rank.
  std::vector<int32_t> host_ids;
  if (!host && assignments > 0) {
    TIDAL_CHECK(topk_ids.dtype == DType::kI32, "top-k ids must be I32");
    host_ids.resize(static_cast<size_t>(assignments));
    backend.copy_to_host(host_ids.data(), topk_ids.data,
                         static_cast<size_t>(assignments) * sizeof(int32_t));
  }
  const auto* ids = host ? topk_ids.as<const int32_t>() : host_ids.data();
  TIDAL_CHECK(tables_->size() == 1 || moe_layer < static_cast<int64_t>(tables_->size()),
              "MoE layer ", moe_layer, " has no placement tables (", tables_->size(), ")");
  const eplb::PlacementTables& tables =
      tables_->size() == 1 ? tables_->front() : (*tables_)[static_cast<size_t>(moe_layer)];
  if (load_window_ != nullptr && assignments > 0) {
    load_window_->record(static_cast<int>(moe_layer),
                         std::span<const int32_t>(ids, static_cast<size_t>(assignments)));
  }
  std::vector<int32_t> local_slot(static_cast<size_t>(assignments));
  std::vector<int64_t> send_rows(static_cast<size_t>(num_ranks), 0);
  std::vector<int32_t> destination(static_cast<size_t>(assignments));
  const int64_t slots_per_rank = shape_.slots_per_rank;
  for (int64_t a = 0; a < assignments; ++a) {
    const int32_t slot =
        eplb::select_replica_slot(tables, shape_, ids[a], static_cast<uint32_t>(a / k));
    destination[a] = static_cast<int32_t>(slot / slots_per_rank);
    local_slot[a] = static_cast<int32_t>(slot % slots_per_rank);
    ++send_rows[destination[a]];
  }
  std::vector<int32_t> send_order(static_cast<size_t>(assignments));
  {
    std::vector<int64_t> next(static_cast<size_t>(num_ranks), 0);
    for (int r = 1; r < num_ranks; ++r) next[r] = next[r - 1] + send_rows[r - 1];
    for (int64_t a = 0; a < assignments; ++a) {
      send_order[next[destination[a]]++] = static_cast<int32_t>(a);
    }
  }
  std::vector<int64_t> recv_rows(static_cast<size_t>(num_ranks), 0);
  group.all_to_all(send_rows, recv_rows);
  int64_t received = 0;
  for (const int64_t rows : recv_rows) received += rows;
  TIDAL_CHECK(received <= capacity, "received ", received, " expert rows, capacity ", capacity);

  // Fixed-size buffers, whatever this step's routing: the warm-up sizes the workspace once.
  const Tensor send_x = workspace.take(act, {std::max<int64_t>(assignments, 1), hidden});
  const Tensor send_slots = workspace.take(DType::kI32, {std::max<int64_t>(assignments, 1), 1});
  const Tensor recv_x = workspace.take(act, {capacity, hidden});
  const Tensor recv_slots = workspace.take(DType::kI32, {capacity, 1});
  const Tensor recv_weights = workspace.take(DType::kF32, {capacity, 1});
  const Tensor recv_y = workspace.take(act, {capacity, hidden});
  const Tensor back_y = workspace.take(act, {std::max<int64_t>(assignments, 1), hidden});
  const Tensor expert_out = workspace.take(act, {std::max<int64_t>(assignments, 1), hidden});

  // A device index array (unused on the host path, which reads the host vectors in place).
  const Tensor device_rows =
      host ? Tensor{} : workspace.take(DType::kI32, {std::max<int64_t>(assignments, 1)});

  std::vector<int32_t> send_tokens(static_cast<size_t>(assignments));
  std::vector<int32_t> host_send_slots(host ? 0 : static_cast<size_t>(assignments));
  int32_t* slot_out = host ? send_slots.as<int32_t>() : host_send_slots.data();
  for (int64_t i = 0; i < assignments; ++i) {
    send_tokens[i] = static_cast<int32_t>(send_order[i] / k);
    slot_out[i] = local_slot[send_order[i]];
  }
  if (assignments > 0) {
    Tensor token_rows{.data = send_tokens.data(),
                      .dtype = DType::kI32,
                      .shape = {assignments},
                      .device = backend.device()};
    if (!host) {
      const size_t index_bytes = static_cast<size_t>(assignments) * sizeof(int32_t);
      backend.copy_from_host(send_slots.data, host_send_slots.data(), index_bytes);
      backend.copy_from_host(device_rows.data, send_tokens.data(), index_bytes);
      token_rows.data = device_rows.data;
    }
    backend.gather_rows(x, token_rows, send_x.rows(0, assignments));
  }
  std::vector<size_t> send_bytes(static_cast<size_t>(num_ranks)),
      recv_bytes(static_cast<size_t>(num_ranks)), send_slot_bytes(static_cast<size_t>(num_ranks)),
      recv_slot_bytes(static_cast<size_t>(num_ranks));
  for (int r = 0; r < num_ranks; ++r) {
    send_bytes[r] = static_cast<size_t>(send_rows[r]) * row_bytes;
    recv_bytes[r] = static_cast<size_t>(recv_rows[r]) * row_bytes;
    send_slot_bytes[r] = static_cast<size_t>(send_rows[r]) * sizeof(int32_t);
    recv_slot_bytes[r] = static_cast<size_t>(recv_rows[r]) * sizeof(int32_t);
  }
  group.all_to_all_v(send_x.data, send_bytes, recv_x.data, recv_bytes);
  group.all_to_all_v(send_slots.data, send_slot_bytes, recv_slots.data, recv_slot_bytes);

  // This rank's experts over every row it received, one choice per row with weight one.
  if (host) {
    std::fill_n(recv_weights.as<float>(), received, 1.0f);
  } else if (received > 0) {
    const std::vector<float> ones(static_cast<size_t>(received), 1.0f);
    backend.copy_from_host(recv_weights.data, ones.data(), ones.size() * sizeof(float));
  }
  backend.moe_experts(recv_x.rows(0, received), recv_slots.rows(0, received),
                      recv_weights.rows(0, received), slots, recv_y.rows(0, received));
  group.all_to_all_v(recv_y.data, recv_bytes, back_y.data, send_bytes);

  // Back to (token, choice) order, then the weighted sum in top-k order.
  if (assignments > 0) {
    std::vector<int32_t> inverse(static_cast<size_t>(assignments));
    for (int64_t i = 0; i < assignments; ++i) inverse[send_order[i]] = static_cast<int32_t>(i);
    Tensor inverse_rows{.data = inverse.data(),
                        .dtype = DType::kI32,
                        .shape = {assignments},
                        .device = backend.device()};
    if (!host) {
      // device_rows held the send order's token rows, which gather_rows above already read on
      // the same stream, so it can take the inverse index now.
      backend.copy_from_host(device_rows.data, inverse.data(),
                             static_cast<size_t>(assignments) * sizeof(int32_t));
      inverse_rows.data = device_rows.data;
    }
    backend.gather_rows(back_y.rows(0, assignments), inverse_rows, expert_out.rows(0, assignments));
  }
  const Tensor out = workspace.take(act, {tokens, hidden});
  backend.moe_combine(expert_out.rows(0, assignments), topk_weights, out);
  return out;
}

}  // namespace tidal
