// The expert-parallel dispatch plan on the CPU backend (the reference the GPU op test compares
// with): blocks per rank in choice order, padding tokens neither routed nor counted, counters
// added to, a full block refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"

namespace tidal {
namespace {

using ::testing::ElementsAre;

class ExpertRouteTest : public ::testing::Test {
 protected:
  Tensor i32(std::vector<int32_t> values, std::vector<int64_t> shape) {
    storage_.push_back(std::move(values));
    return {.data = storage_.back().data(), .dtype = DType::kI32, .shape = std::move(shape)};
  }
  const std::vector<int32_t>& values(const Tensor& tensor) const {
    for (const std::vector<int32_t>& v : storage_) {
      if (v.data() == tensor.data) return v;
    }
    throw Error("no such tensor");
  }
  std::unique_ptr<Backend> backend_ = make_backend("cpu");
  std::vector<std::vector<int32_t>> storage_;
};

TEST_F(ExpertRouteTest, BlocksPerRankPaddingAndCounts) {
  storage_.reserve(16);  // the tensors point into it
  // 4 experts, one replica each, expert e in slot e; 2 slots per rank, so experts 2 and 3 live on
  // rank 1. Token 1 is padding.
  const ExpertRoute route{.replica_count = i32({1, 1, 1, 1}, {4}),
                          .replica_slots = i32({0, 1, 2, 3}, {4, 1}),
                          .slots_per_rank = 2,
                          .num_ranks = 2,
                          .capacity = 6,
                          .token_ids = i32({5, -1, 7}, {3}),
                          .load_counts = i32({10, 10, 10, 10}, {4})};
  const Tensor ids = i32({0, 3, 1, 2, 2, 3}, {3, 2});
  const Tensor send_tokens = i32(std::vector<int32_t>(12, 99), {12});
  const Tensor send_slots = i32(std::vector<int32_t>(12, 99), {12});
  const Tensor positions = i32(std::vector<int32_t>(6, 99), {6});
  backend_->route_experts(ids, route, send_tokens, send_slots, positions);
  EXPECT_THAT(values(positions), ElementsAre(0, 6, -1, -1, 7, 8));
  EXPECT_THAT(values(send_tokens), ElementsAre(0, -1, -1, -1, -1, -1, 0, 2, 2, -1, -1, -1));
  EXPECT_THAT(values(send_slots), ElementsAre(0, -1, -1, -1, -1, -1, 1, 0, 1, -1, -1, -1));
  EXPECT_THAT(values(route.load_counts), ElementsAre(11, 10, 11, 12));
}

TEST_F(ExpertRouteTest, AFullBlockIsRefused) {
  storage_.reserve(16);
  const ExpertRoute route{.replica_count = i32({1, 1}, {2}),
                          .replica_slots = i32({0, 1}, {2, 1}),
                          .slots_per_rank = 2,
                          .num_ranks = 1,
                          .capacity = 1};
  EXPECT_THROW(backend_->route_experts(i32({0, 1}, {1, 2}), route, i32({0}, {1}), i32({0}, {1}),
                                       i32({0, 0}, {2})),
               Error);
}

}  // namespace
}  // namespace tidal
