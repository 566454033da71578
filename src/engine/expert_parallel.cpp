// ExpertParallelExecutor: the plan on the device, dispatch by all-to-all of fixed blocks, local
// experts, the answers back the same way, then the combine in top-k order.
#include "engine/expert_parallel.h"

#include <algorithm>
#include <span>
#include <vector>

namespace tidal {

ExpertParallelExecutor::ExpertParallelExecutor(Communicator& group,
                                               const std::vector<eplb::PlacementTables>& tables,
                                               eplb::TableShape shape)
    : group_(&group), tables_(&tables), shape_(shape) {
  TIDAL_CHECK(!tables.empty(), "expert parallelism needs placement tables");
}

size_t ExpertParallelExecutor::workspace_bytes_per_rank(int64_t tokens, int64_t k, int64_t hidden,
                                                        DType act) {
  // run()'s takes of num_ranks * capacity rows: send_tokens, send_slots and recv_slots (I32),
  // send_x, recv_x, recv_y and back_y (hidden wide); capacity is tokens * k.
  const auto rows = static_cast<size_t>(tokens * k);
  return rows * (3 * sizeof(int32_t) + 4 * static_cast<size_t>(hidden) * dtype_size(act));
}

void ExpertParallelExecutor::upload_tables(Backend& backend) {
  std::vector<int32_t> flat;
  for (const eplb::PlacementTables& tables : *tables_) {
    TIDAL_CHECK(tables.replica_count.size() == static_cast<size_t>(shape_.num_logical) &&
                    tables.replica_slots.size() == static_cast<size_t>(shape_.num_logical) *
                                                       static_cast<size_t>(shape_.replica_width),
                "placement tables of another shape than the executor's");
    // The routing kernel drops a choice whose table entry is bad rather than stopping the step:
    // catch that here, where it can be named.
    const int64_t num_slots = static_cast<int64_t>(tables.num_ranks) * shape_.slots_per_rank;
    for (int expert = 0; expert < shape_.num_logical; ++expert) {
      const int32_t replicas = tables.replica_count[static_cast<size_t>(expert)];
      TIDAL_CHECK(replicas >= 1 && replicas <= shape_.replica_width, "expert ", expert, " has ",
                  replicas, " replicas in the placement tables (1 to ", shape_.replica_width, ")");
      for (int r = 0; r < replicas; ++r) {
        const int32_t slot =
            tables.replica_slots[static_cast<size_t>(expert * shape_.replica_width + r)];
        TIDAL_CHECK(slot >= 0 && slot < num_slots, "expert ", expert, " replica ", r, " in slot ",
                    slot, ", outside the ", num_slots, " slots of ", tables.num_ranks, " ranks");
      }
    }
    flat.insert(flat.end(), tables.replica_count.begin(), tables.replica_count.end());
    flat.insert(flat.end(), tables.replica_slots.begin(), tables.replica_slots.end());
  }
  const size_t bytes = flat.size() * sizeof(int32_t);
  if (device_tables_.data() == nullptr) device_tables_ = backend.allocate(bytes);
  TIDAL_CHECK(device_tables_.bytes() == bytes, "placement tables changed size");
  backend.copy_from_host(device_tables_.data(), flat.data(), bytes);
}

ExpertRoute ExpertParallelExecutor::route_of(const Backend& backend, int64_t moe_layer,
                                             int64_t capacity) const {
  TIDAL_CHECK(tables_->size() == 1 || moe_layer < static_cast<int64_t>(tables_->size()),
              "MoE layer ", moe_layer, " has no placement tables (", tables_->size(), ")");
  const int64_t table = tables_->size() == 1 ? 0 : moe_layer;
  const int64_t experts = shape_.num_logical;
  const int64_t width = shape_.replica_width;
  auto* count = static_cast<int32_t*>(device_tables_.data()) + table * experts * (1 + width);
  return {.replica_count = {.data = count,
                            .dtype = DType::kI32,
                            .shape = {experts},
                            .device = backend.device()},
          .replica_slots = {.data = count + experts,
                            .dtype = DType::kI32,
                            .shape = {experts, width},
                            .device = backend.device()},
          .slots_per_rank = shape_.slots_per_rank,
          .num_ranks = group_->size(),
          .capacity = capacity};
}

const Tensor& ExpertParallelExecutor::ones(Backend& backend, int64_t rows) {
  if (ones_.num_elements() < rows || ones_.data == nullptr) {
    // Only a warm-up grows it: the largest step comes first, and a capture may not copy.
    const std::vector<float> values(static_cast<size_t>(std::max<int64_t>(rows, 1)), 1.0f);
    ones_buffer_ = backend.allocate(values.size() * sizeof(float));
    backend.copy_from_host(ones_buffer_.data(), values.data(), values.size() * sizeof(float));
    ones_ = {.data = ones_buffer_.data(),
             .dtype = DType::kF32,
             .shape = {static_cast<int64_t>(values.size()), 1},
             .device = backend.device()};
  }
  return ones_;
}

void ExpertParallelExecutor::collect_load(Backend& backend) {
  if (load_window_ == nullptr || load_counts_.data == nullptr) return;
  std::vector<int32_t> counts(static_cast<size_t>(load_counts_.num_elements()));
  backend.copy_to_host(counts.data(), load_counts_.data, counts.size() * sizeof(int32_t));
  backend.fill_zero(load_counts_);
  load_window_->record_counts(counts);
}

void ExpertParallelExecutor::discard_load(Backend& backend) {
  if (load_counts_.data != nullptr) backend.fill_zero(load_counts_);
}

Tensor ExpertParallelExecutor::run(Backend& backend, Workspace& workspace, int64_t moe_layer,
                                   const Tensor& x, const Tensor& topk_ids,
                                   const Tensor& topk_weights, const ExpertSlots& slots,
                                   const Tensor& token_ids) {
  Communicator& group = *group_;
  const int64_t num_ranks = group.size();
  const int64_t tokens = x.dim(0);
  const int64_t hidden = x.dim(1);
  const int64_t k = topk_ids.dim(1);
  const int64_t choices = tokens * k;
  // A rank's choices may all go to one rank: each block holds all of them.
  const int64_t capacity = choices;
  const int64_t rows = num_ranks * capacity;
  const DType act = backend.activation_dtype();
  if (device_tables_.data() == nullptr) upload_tables(backend);

  if (load_window_ != nullptr && load_counts_.data == nullptr) {
    // The first step with a window is a warm-up's, never inside a capture.
    load_counts_ = {.data = nullptr,
                    .dtype = DType::kI32,
                    .shape = {load_window_->num_layers(), load_window_->num_logical()},
                    .device = backend.device()};
    load_counts_buffer_ = backend.allocate(load_counts_.num_bytes());
    load_counts_.data = load_counts_buffer_.data();
    backend.fill_zero(load_counts_);
  }

  // Fixed shapes for a given token count, whatever the routing: the warm-up sizes the workspace
  // once, and a graph replays the same exchanges.
  const int64_t some_rows = std::max<int64_t>(rows, 1);
  const int64_t some_choices = std::max<int64_t>(choices, 1);
  const Tensor send_tokens = workspace.take(DType::kI32, {some_rows});
  const Tensor send_slots = workspace.take(DType::kI32, {some_rows, 1});
  const Tensor positions = workspace.take(DType::kI32, {some_choices});
  const Tensor send_x = workspace.take(act, {some_rows, hidden});
  const Tensor recv_x = workspace.take(act, {some_rows, hidden});
  const Tensor recv_slots = workspace.take(DType::kI32, {some_rows, 1});
  const Tensor recv_y = workspace.take(act, {some_rows, hidden});
  const Tensor back_y = workspace.take(act, {some_rows, hidden});
  const Tensor expert_out = workspace.take(act, {some_choices, hidden});
  const Tensor out = workspace.take(act, {tokens, hidden});
  const Tensor& weights = ones(backend, some_rows);

  if (choices > 0) {
    ExpertRoute route = route_of(backend, moe_layer, capacity);
    route.token_ids = token_ids;
    if (load_window_ != nullptr) {
      TIDAL_CHECK(moe_layer < load_counts_.dim(0), "MoE layer ", moe_layer, " of a load window of ",
                  load_counts_.dim(0));
      route.load_counts = load_counts_.rows(moe_layer, 1);
    }
    backend.route_experts(topk_ids, route, send_tokens.rows(0, rows), send_slots.rows(0, rows),
                          positions.rows(0, choices));
    // Unused rows gather token -1: zeros, sent but never computed (their slot is -1).
    backend.gather_rows(x, send_tokens.rows(0, rows), send_x.rows(0, rows));
  }
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(act);
  const std::vector<size_t> block_bytes(static_cast<size_t>(num_ranks),
                                        static_cast<size_t>(capacity) * row_bytes);
  const std::vector<size_t> slot_bytes(static_cast<size_t>(num_ranks),
                                       static_cast<size_t>(capacity) * sizeof(int32_t));
  group.all_to_all_v(send_x.data, block_bytes, recv_x.data, block_bytes);
  group.all_to_all_v(send_slots.data, slot_bytes, recv_slots.data, slot_bytes);
  if (rows > 0) {
    // This rank's experts over every row it received, one choice per row with weight one.
    backend.moe_experts(recv_x.rows(0, rows), recv_slots.rows(0, rows), weights.rows(0, rows),
                        slots, recv_y.rows(0, rows));
  }
  group.all_to_all_v(recv_y.data, block_bytes, back_y.data, block_bytes);
  if (choices > 0) {
    // Back to (token, choice) order, then the weighted sum in top-k order.
    backend.gather_rows(back_y.rows(0, rows), positions.rows(0, choices),
                        expert_out.rows(0, choices));
  }
  backend.moe_combine(expert_out.rows(0, choices), topk_weights, out);
  return out;
}

}  // namespace tidal
