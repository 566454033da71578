// move_expert_weights over real Gloo communicators (ranks as threads): after the moves every slot
// holds its new expert's bytes, for skewed re-plans with cycles, staging and redundant replicas.
#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "comm/communicator.h"
#include "comm/gloo_communicator.h"
#include "comm/kv_store.h"
#include "elastic/expert_mover.h"
#include "eplb/placement.h"
#include "eplb/placement_diff.h"
#include "eplb/placement_policy.h"

namespace tidal {
namespace {

using namespace std::chrono_literals;

void run_ranks(int size, const std::function<void(int)>& body) {
  std::vector<std::future<void>> ranks;
  for (int rank = 0; rank < size; ++rank) {
    ranks.push_back(std::async(std::launch::async, body, rank));
  }
  for (auto& rank : ranks) rank.get();
}

// The bytes of expert e in buffer b: a pattern unique to (e, b, offset).
std::byte pattern(int expert, int buffer, size_t offset) {
  return static_cast<std::byte>((expert * 31 + buffer * 7 + static_cast<int>(offset)) & 0xff);
}

// Buffer `buffer` of one rank: slot s holds the bytes of local[s].
std::vector<std::byte> fill(const std::vector<int32_t>& local, size_t slot_bytes, int buffer) {
  std::vector<std::byte> bytes(local.size() * slot_bytes);
  for (size_t s = 0; s < local.size(); ++s) {
    for (size_t i = 0; i < slot_bytes; ++i)
      bytes[s * slot_bytes + i] = pattern(local[s], buffer, i);
  }
  return bytes;
}

void expect_moves_land(const eplb::Placement& before, const eplb::Placement& after) {
  const int num_ranks = before.num_ranks();
  const eplb::MovePlan plan =
      eplb::plan_moves(before, after, eplb::identity_rank_map(num_ranks, num_ranks));
  ASSERT_GT(plan.moves.size(), 0u);
  KvStoreServer server;
  run_ranks(num_ranks, [&](int rank) {
    KvStoreClient store({.endpoint = server.endpoint(), .timeout = 10s});
    auto group = make_gloo_communicator(
        {.store = &store, .rank = rank, .size = num_ranks, .epoch = 0, .timeout = 10s});
    // Two buffers of different slot sizes, like gate_up and down.
    std::vector<std::byte> gate_up = fill(before.local_slot_to_logical(rank), 48, 0);
    std::vector<std::byte> down = fill(before.local_slot_to_logical(rank), 24, 1);
    const std::byte* gate_up_address = gate_up.data();
    const SlotBuffer buffers[] = {{.base = gate_up.data(), .slot_bytes = 48},
                                  {.base = down.data(), .slot_bytes = 24}};
    CpuBackend backend;
    const MoveStats stats = move_expert_weights(*group, backend, plan, buffers);
    EXPECT_EQ(gate_up.data(), gate_up_address);
    const std::vector<int32_t> expected = after.local_slot_to_logical(rank);
    for (size_t s = 0; s < expected.size(); ++s) {
      for (size_t i = 0; i < 48; ++i) {
        ASSERT_EQ(gate_up[s * 48 + i], pattern(expected[s], 0, i)) << "rank " << rank;
      }
      for (size_t i = 0; i < 24; ++i) {
        ASSERT_EQ(down[s * 24 + i], pattern(expected[s], 1, i)) << "rank " << rank;
      }
    }
    int64_t received = 0, copied = 0;
    for (const eplb::ExpertMove& move : plan.moves) {
      if (move.dst_rank_idx != rank) continue;
      (move.src_rank_idx == rank ? copied : received) += 72;
    }
    EXPECT_EQ(stats.bytes_received, received);
    EXPECT_EQ(stats.bytes_copied, copied);
    group->barrier();
  });
}

TEST(ExpertMover, SkewedReplanLandsEveryExpert) {
  // 8 experts on 3 ranks x 3 slots, then all load on experts 0 and 1.
  const eplb::Placement before = eplb::initial_placement(8, 3, 3);
  std::vector<double> load(8, 1.0);
  load[0] = 100;
  load[1] = 60;
  const eplb::Placement after = eplb::plan_placement(before, 3, load);
  expect_moves_land(before, after);
}

TEST(ExpertMover, SwapCycleIsStaged) {
  // Ranks 0 and 1 exchange their experts: a cycle that needs staging on both sides.
  const eplb::Placement before(4, 2, 2, {0, 1, 2, 3});
  const eplb::Placement after(4, 2, 2, {2, 3, 0, 1});
  expect_moves_land(before, after);
}

TEST(ExpertMover, LocalPermutationIsStaged) {
  const eplb::Placement before(4, 2, 2, {0, 1, 2, 3});
  const eplb::Placement after(4, 2, 2, {1, 0, 3, 2});
  expect_moves_land(before, after);
}

}  // namespace
}  // namespace tidal
