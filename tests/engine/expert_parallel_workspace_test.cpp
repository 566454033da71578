// What a rank more costs expert parallelism's step in workspace: the formula the KV cache sizing
// reserves for a scale-up, against the workspace run() really takes in groups of 1 to 4 ranks.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "backend/workspace.h"
#include "engine/expert_parallel.h"
#include "eplb/placement_policy.h"
#include "eplb/replica_tables.h"

namespace tidal {
namespace {

// A group of `size` ranks in one process: exchanges copy the send buffer to the receive buffer
// (the values are not what this test looks at, only the workspace their shapes take).
class LoopbackGroup final : public Communicator {
 public:
  explicit LoopbackGroup(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  uint64_t epoch() const override { return 0; }
  void all_reduce_sum(std::span<int64_t> /*values*/) override {}
  void all_reduce_max(std::span<int64_t> /*values*/) override {}
  void all_reduce_sum(std::span<float> /*values*/) override {}
  void all_to_all_v(const void* send, std::span<const size_t> send_bytes, void* recv,
                    std::span<const size_t> /*recv_bytes*/) override {
    const size_t total = std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0});
    if (total > 0) std::memcpy(recv, send, total);
  }
  void send(int /*peer*/, const void* /*data*/, size_t /*bytes*/) override {}
  void recv(int /*peer*/, void* /*data*/, size_t /*bytes*/) override {}
  void barrier() override {}

 private:
  int size_;
};

// The workspace high-water mark of one MoE layer's run() of `tokens` tokens in a group of
// `num_ranks` (experts 8, top-2, 2 slots per rank... enough slots for any group of 4 or fewer).
size_t run_workspace(Backend& backend, int num_ranks, int64_t tokens) {
  constexpr int kExperts = 8;
  constexpr int64_t kTopK = 2, kHidden = 64, kInter = 32;
  const int slots = (kExperts + num_ranks - 1) / num_ranks;
  LoopbackGroup group(num_ranks);
  const eplb::TableShape shape = eplb::table_shape(kExperts, slots, 4);
  const std::vector<eplb::PlacementTables> tables{
      eplb::build_tables(eplb::initial_placement(kExperts, num_ranks, slots), shape)};
  ExpertParallelExecutor executor(group, tables, shape);

  std::vector<DeviceBuffer> owned;
  const auto tensor = [&](DType dtype, std::initializer_list<int64_t> dims) {
    Tensor t{.data = nullptr, .dtype = dtype, .shape = dims, .device = backend.device()};
    owned.push_back(backend.allocate(t.num_bytes()));
    t.data = owned.back().data();
    backend.fill_zero(t);
    return t;
  };
  const Tensor x = tensor(DType::kF32, {tokens, kHidden});
  const Tensor ids = tensor(DType::kI32, {tokens, kTopK});  // every choice expert 0
  const Tensor weights = tensor(DType::kF32, {tokens, kTopK});
  const Tensor token_ids = tensor(DType::kI32, {tokens});
  const ExpertSlots experts{.gate_up = tensor(DType::kF32, {slots, 2 * kInter, kHidden}),
                            .down = tensor(DType::kF32, {slots, kHidden, kInter})};
  Workspace workspace(backend);
  workspace.begin_step();
  executor.run(backend, workspace, 0, x, ids, weights, experts, token_ids);
  return workspace.high_water_bytes();
}

TEST(ExpertParallelWorkspace, EachRankAddsWhatTheFormulaSays) {
  const std::unique_ptr<Backend> backend = make_backend("cpu");
  constexpr int64_t kTokens = 96;
  const size_t per_rank =
      ExpertParallelExecutor::workspace_bytes_per_rank(kTokens, 2, 64, backend->activation_dtype());
  const size_t one = run_workspace(*backend, 1, kTokens);
  for (int ranks = 2; ranks <= 4; ++ranks) {
    const size_t measured = run_workspace(*backend, ranks, kTokens) - one;
    const size_t predicted = static_cast<size_t>(ranks - 1) * per_rank;
    // Each of the seven rank-sized takes rounds up to 256 bytes on its own.
    EXPECT_LE(measured, predicted + 7 * 256) << ranks << " ranks";
    EXPECT_GE(measured + 7 * 256, predicted) << ranks << " ranks";
  }
}

}  // namespace
}  // namespace tidal
