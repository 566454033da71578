// Gloo communicators with ranks as threads of one process: two epochs side by side, scale cycles.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/gloo_communicator.h"
#include "comm/kv_store.h"

namespace tidal {
namespace {

using namespace std::chrono_literals;

constexpr auto kTimeout = 10s;

// Runs body(rank) on `size` threads and rethrows the first failure.
void run_ranks(int size, const std::function<void(int)>& body) {
  std::vector<std::future<void>> ranks;
  for (int rank = 0; rank < size; ++rank) {
    ranks.push_back(std::async(std::launch::async, body, rank));
  }
  for (auto& rank : ranks) rank.get();
}

int64_t sum_of_ranks(Communicator& comm) {
  std::vector<int64_t> value{comm.rank()};
  comm.all_reduce_sum(std::span<int64_t>(value));
  return value[0];
}

TEST(GlooThreads, NextEpochBuildsWhileCurrentServesAndOutlivesIt) {
  KvStoreServer server;
  constexpr int kSize = 4;
  run_ranks(kSize, [&](int rank) {
    KvStoreClient store({.endpoint = server.endpoint(), .timeout = kTimeout});
    auto current = make_gloo_communicator(
        {.store = &store, .rank = rank, .size = kSize, .epoch = 5, .timeout = kTimeout});
    // The standby communicator's rendezvous runs on another thread (sharing the store client)
    // while this one keeps stepping on the current communicator.
    auto standby = std::async(std::launch::async, [&] {
      return make_gloo_communicator(
          {.store = &store, .rank = rank, .size = kSize, .epoch = 6, .timeout = kTimeout});
    });
    for (int step = 0; step < 20; ++step) EXPECT_EQ(sum_of_ranks(*current), 6);
    std::unique_ptr<Communicator> next = standby.get();
    EXPECT_EQ(next->epoch(), 6u);
    EXPECT_EQ(sum_of_ranks(*next), 6);
    EXPECT_EQ(sum_of_ranks(*current), 6);
    current->barrier();
    current.reset();
    EXPECT_EQ(sum_of_ranks(*next), 6);
    std::vector<int64_t> send(kSize, rank), recv(kSize, -1);
    next->all_to_all(send, recv);
    for (int p = 0; p < kSize; ++p) EXPECT_EQ(recv[p], p);
    next->barrier();
  });
}

TEST(GlooThreads, BindsToANamedInterface) {
  KvStoreServer server;
  run_ranks(2, [&](int rank) {
    auto comm = make_gloo_communicator({.store_endpoint = server.endpoint(),
                                        .rank = rank,
                                        .size = 2,
                                        .epoch = 1,
                                        .interface = "lo",
                                        .timeout = kTimeout});
    EXPECT_EQ(sum_of_ranks(*comm), 1);
  });
}

TEST(GlooThreads, TwentyScaleCyclesLeaveNoStoreKeysBehind) {
  KvStoreServer server;
  KvStoreClient coordinator({.endpoint = server.endpoint(), .timeout = kTimeout});
  for (uint64_t epoch = 1; epoch <= 20; ++epoch) {
    const int size = epoch % 2 == 1 ? 2 : 3;
    run_ranks(size, [&](int rank) {
      KvStoreClient store({.endpoint = server.endpoint(), .timeout = kTimeout});
      auto comm = make_gloo_communicator(
          {.store = &store, .rank = rank, .size = size, .epoch = epoch, .timeout = kTimeout});
      EXPECT_EQ(sum_of_ranks(*comm), size * (size - 1) / 2);
      comm->barrier();
    });
    EXPECT_GT(coordinator.delete_prefix(gloo_store_prefix(epoch)), 0u);
    EXPECT_EQ(coordinator.count_prefix(""), 0u) << "after epoch " << epoch;
  }
}

}  // namespace
}  // namespace tidal
