// Gloo communicators across real rank processes: this binary re-executes itself as each rank.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/gloo_communicator.h"
#include "comm/kv_store.h"

namespace tidal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- worker side: runs in the child process, reports through its exit code and stderr ----

struct WorkerArgs {
  std::string scenario;
  std::string endpoint;
  int rank = 0;
  int size = 1;
  std::chrono::milliseconds timeout{0};
};

#define WORKER_CHECK(cond, ...)                                                       \
  do {                                                                                \
    if (!(cond)) throw Error(cat("line ", __LINE__, ": ", #cond, ": ", __VA_ARGS__)); \
  } while (0)

int64_t elapsed_ms(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// Bytes rank src sends to rank dst in the all_to_all_v check: uneven, with zeros (including one
// rank that sends nothing at all) and one segment of several MB.
size_t segment_bytes(int src, int dst, int size) {
  if (src == 0 && dst == (size > 1 ? 1 : 0)) return (3u << 20) + 17;
  if (size > 2 && src == size - 1) return 0;
  if ((src + dst) % 3 == 0) return 0;
  return static_cast<size_t>(src * 131 + dst * 71) % 4000 + 1;
}

char pattern_byte(int src, int dst, size_t i) {
  return static_cast<char>(
      (static_cast<size_t>(src) * 31 + static_cast<size_t>(dst) * 17 + i * 7 + (i >> 8)) & 0xff);
}

void check_all_reduce(Communicator& comm) {
  const int rank = comm.rank();
  const int size = comm.size();
  std::vector<int64_t> sums(1000);
  for (size_t i = 0; i < sums.size(); ++i) sums[i] = rank * 1000 + static_cast<int64_t>(i);
  comm.all_reduce_sum(std::span<int64_t>(sums));
  for (size_t i = 0; i < sums.size(); ++i) {
    const int64_t expected = 1000 * size * (size - 1) / 2 + size * static_cast<int64_t>(i);
    WORKER_CHECK(sums[i] == expected, "sum[", i, "] = ", sums[i], ", expected ", expected);
  }

  auto max_input = [](int r, size_t i) { return static_cast<int64_t>((r * 7 + i) % 13) - 5; };
  std::vector<int64_t> maxes(257);
  for (size_t i = 0; i < maxes.size(); ++i) maxes[i] = max_input(rank, i);
  comm.all_reduce_max(std::span<int64_t>(maxes));
  for (size_t i = 0; i < maxes.size(); ++i) {
    int64_t expected = max_input(0, i);
    for (int r = 1; r < size; ++r) expected = std::max(expected, max_input(r, i));
    WORKER_CHECK(maxes[i] == expected, "max[", i, "] = ", maxes[i], ", expected ", expected);
  }

  // Halves and small integers add exactly in any order, so the float sum is exact.
  std::vector<float> floats(3000);
  for (size_t i = 0; i < floats.size(); ++i) floats[i] = 0.5f * static_cast<float>(rank + i % 5);
  comm.all_reduce_sum(std::span<float>(floats));
  for (size_t i = 0; i < floats.size(); ++i) {
    float expected = 0;
    for (int r = 0; r < size; ++r) expected += 0.5f * static_cast<float>(r + i % 5);
    WORKER_CHECK(floats[i] == expected, "float sum[", i, "] = ", floats[i], ", expected ",
                 expected);
  }

  comm.all_reduce_sum(std::span<int64_t>());  // nothing to reduce still completes
}

void check_all_to_all(Communicator& comm) {
  const int rank = comm.rank();
  const int size = comm.size();
  const auto num_ranks = static_cast<size_t>(size);

  // Counts first, as the engine does.
  std::vector<int64_t> send_counts(num_ranks), recv_counts(num_ranks);
  for (int p = 0; p < size; ++p)
    send_counts[p] = static_cast<int64_t>(segment_bytes(rank, p, size));
  comm.all_to_all(send_counts, recv_counts);
  std::vector<size_t> send_bytes(num_ranks), recv_bytes(num_ranks);
  for (int p = 0; p < size; ++p) {
    WORKER_CHECK(recv_counts[p] == static_cast<int64_t>(segment_bytes(p, rank, size)),
                 "count from rank ", p, " is ", recv_counts[p]);
    send_bytes[p] = static_cast<size_t>(send_counts[p]);
    recv_bytes[p] = static_cast<size_t>(recv_counts[p]);
  }

  std::vector<char> send(std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0}));
  std::vector<char> recv(std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0}), 'X');
  size_t offset = 0;
  for (int p = 0; p < size; ++p) {
    for (size_t i = 0; i < send_bytes[p]; ++i) send[offset + i] = pattern_byte(rank, p, i);
    offset += send_bytes[p];
  }
  comm.all_to_all_v(send.data(), send_bytes, recv.data(), recv_bytes);
  offset = 0;
  for (int p = 0; p < size; ++p) {
    for (size_t i = 0; i < recv_bytes[p]; ++i) {
      WORKER_CHECK(recv[offset + i] == pattern_byte(p, rank, i), "byte ", i, " from rank ", p);
    }
    offset += recv_bytes[p];
  }

  // An idle step: every count 0, no buffers at all.
  const std::vector<size_t> zeros(num_ranks, 0);
  comm.all_to_all_v(nullptr, zeros, nullptr, zeros);
}

void check_send_recv(Communicator& comm) {
  const int rank = comm.rank();
  const int size = comm.size();
  if (size == 1) return;
  const int next = (rank + 1) % size;
  const int prev = (rank + size - 1) % size;
  const size_t out_bytes = (1u << 20) + static_cast<size_t>(rank);
  const size_t in_bytes = (1u << 20) + static_cast<size_t>(prev);
  std::vector<char> out(out_bytes), in(in_bytes);
  for (size_t i = 0; i < out.size(); ++i) out[i] = pattern_byte(rank, next, i);
  // Even ranks send first and odd ranks receive first, so the ring never waits on itself.
  auto do_send = [&] {
    comm.send(next, out.data(), out.size());
    comm.send(next, nullptr, 0);
  };
  auto do_recv = [&] {
    comm.recv(prev, in.data(), in.size());
    comm.recv(prev, nullptr, 0);
  };
  if (rank % 2 == 0) {
    do_send();
    do_recv();
  } else {
    do_recv();
    do_send();
  }
  for (size_t i = 0; i < in.size(); ++i) {
    WORKER_CHECK(in[i] == pattern_byte(prev, rank, i), "p2p byte ", i, " from rank ", prev);
  }
}

void check_sum_of_ranks(Communicator& comm, int64_t expected, const char* what) {
  std::vector<int64_t> value{comm.rank()};
  comm.all_reduce_sum(std::span<int64_t>(value));
  WORKER_CHECK(value[0] == expected, what, ": sum of ranks ", value[0], ", expected ", expected);
}

void scenario_collectives(const WorkerArgs& args, KvStoreClient& store) {
  auto comm = make_gloo_communicator(
      {.store = &store, .rank = args.rank, .size = args.size, .epoch = 1, .timeout = args.timeout});
  WORKER_CHECK(comm->rank() == args.rank && comm->size() == args.size && comm->epoch() == 1,
               "identity");
  check_all_reduce(*comm);
  check_all_to_all(*comm);
  check_send_recv(*comm);
  comm->barrier();

  // Epoch 2 over the even ranks (e.g. {0, 2} of 3), built while epoch 1 is alive.
  const int subset_size = (args.size + 1) / 2;
  std::unique_ptr<Communicator> subset;
  if (args.rank % 2 == 0) {
    subset = make_gloo_communicator({.store = &store,
                                     .rank = args.rank / 2,
                                     .size = subset_size,
                                     .epoch = 2,
                                     .timeout = args.timeout});
    WORKER_CHECK(subset->epoch() == 2 && subset->size() == subset_size, "subset identity");
    check_sum_of_ranks(*subset, subset_size * (subset_size - 1) / 2, "epoch 2");
    check_all_to_all(*subset);
  }
  const int64_t all_ranks = args.size * (args.size - 1) / 2;
  check_sum_of_ranks(*comm, all_ranks, "epoch 1 beside epoch 2");
  subset.reset();
  check_sum_of_ranks(*comm, all_ranks, "epoch 1 after epoch 2 is gone");
  check_all_to_all(*comm);
  comm->barrier();
}

// The last rank vanishes (or stalls) after the rendezvous; everyone else must get CommError from
// the next collective within the timeout, with the operation, epoch and rank in the message.
void scenario_lost_peer(const WorkerArgs& args, KvStoreClient& store, bool stall) {
  auto comm = make_gloo_communicator(
      {.store = &store, .rank = args.rank, .size = args.size, .epoch = 7, .timeout = args.timeout});
  comm->barrier();
  if (args.rank == args.size - 1) {
    if (stall) std::this_thread::sleep_for(args.timeout + 1s);
    std::fflush(stderr);
    _exit(0);  // no destructors: as abrupt as a crash, the kernel closes the sockets
  }
  const auto start = Clock::now();
  std::vector<int64_t> values(1 << 20, 1);  // 8 MB: survivors are mid-write when the peer goes
  std::string message;
  try {
    comm->all_reduce_sum(std::span<int64_t>(values));
  } catch (const CommError& e) {
    message = e.what();
  }
  const int64_t took_ms = elapsed_ms(start);
  WORKER_CHECK(!message.empty(), "all_reduce_sum completed without the lost peer");
  WORKER_CHECK(took_ms < args.timeout.count() + 1500, "CommError took ", took_ms, " ms");
  for (const std::string& part :
       {std::string("all_reduce_sum"), std::string("epoch 7"), cat("rank ", args.rank)}) {
    WORKER_CHECK(message.find(part) != std::string::npos, "'", part, "' missing in: ", message);
  }
  std::fprintf(stderr, "[rank %d] %s peer: CommError after %lld ms\n", args.rank,
               stall ? "stalled" : "dead", static_cast<long long>(took_ms));
  // A broken group fails at once from now on.
  const auto again = Clock::now();
  bool threw = false;
  try {
    comm->barrier();
  } catch (const CommError&) {
    threw = true;
  }
  WORKER_CHECK(threw && elapsed_ms(again) < 100, "barrier on a broken communicator");
  comm.reset();  // tearing down a broken group must not hang or crash
}

// This rank is one of a group whose last member never shows up.
void scenario_missing_rank(const WorkerArgs& args, KvStoreClient& store) {
  const auto start = Clock::now();
  bool threw = false;
  try {
    make_gloo_communicator({.store = &store,
                            .rank = args.rank,
                            .size = args.size + 1,
                            .epoch = 9,
                            .timeout = args.timeout});
  } catch (const CommError&) {
    threw = true;
  }
  WORKER_CHECK(threw, "rendezvous completed without the missing rank");
  WORKER_CHECK(elapsed_ms(start) < args.timeout.count() + 2500, "took ", elapsed_ms(start), " ms");
}

int run_worker(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: --worker SCENARIO ENDPOINT RANK SIZE TIMEOUT_MS\n");
    return 2;
  }
  WorkerArgs args{.scenario = argv[2],
                  .endpoint = argv[3],
                  .rank = std::atoi(argv[4]),
                  .size = std::atoi(argv[5]),
                  .timeout = std::chrono::milliseconds(std::atoi(argv[6]))};
  try {
    KvStoreClient store({.endpoint = args.endpoint, .timeout = args.timeout});
    if (args.scenario == "collectives") {
      scenario_collectives(args, store);
    } else if (args.scenario == "dead_peer") {
      scenario_lost_peer(args, store, false);
    } else if (args.scenario == "stalled_peer") {
      scenario_lost_peer(args, store, true);
    } else if (args.scenario == "missing_rank") {
      scenario_missing_rank(args, store);
    } else {
      throw Error(cat("unknown scenario ", args.scenario));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d of %d] %s failed: %s\n", args.rank, args.size,
                 args.scenario.c_str(), e.what());
    return 1;
  }
  return 0;
}

// ---- test side: starts the store, launches the ranks, waits with a deadline ----

// Launches `size` rank processes of this binary and returns their exit codes (-signal if
// killed). A process still running at the deadline is killed, so a hang fails the test.
std::vector<int> run_ranks(const std::string& scenario, const std::string& endpoint, int size,
                           std::chrono::milliseconds timeout, std::chrono::seconds limit) {
  std::vector<pid_t> pids;
  for (int rank = 0; rank < size; ++rank) {
    std::vector<std::string> args{"tidal_comm_worker",
                                  "--worker",
                                  scenario,
                                  endpoint,
                                  std::to_string(rank),
                                  std::to_string(size),
                                  std::to_string(timeout.count())};
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    EXPECT_GT(pid, 0) << "fork failed";
    pids.push_back(pid);
  }
  std::vector<int> codes(pids.size(), -1000);
  size_t running = pids.size();
  const auto deadline = Clock::now() + limit;
  while (running > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (codes[i] != -1000 || pids[i] <= 0) continue;
      int status = 0;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        --running;
      }
    }
    if (running == 0) break;
    if (Clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (codes[i] != -1000 || pids[i] <= 0) continue;
        ADD_FAILURE() << "rank " << i << " of " << scenario << " still running after "
                      << limit.count() << " s: killed";
        kill(pids[i], SIGKILL);
        waitpid(pids[i], nullptr, 0);
        codes[i] = -SIGKILL;
      }
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  return codes;
}

void expect_all_succeeded(const std::vector<int>& codes) {
  for (size_t rank = 0; rank < codes.size(); ++rank) {
    EXPECT_EQ(codes[rank], 0) << "rank " << rank << " failed (see its stderr above)";
  }
}

class GlooProcesses : public testing::TestWithParam<int> {};

TEST_P(GlooProcesses, CollectivesPointToPointAndSecondEpoch) {
  KvStoreServer server;
  const int size = GetParam();
  expect_all_succeeded(run_ranks("collectives", server.endpoint(), size, 10s, 30s));
  // Each epoch's rendezvous left its keys behind; dropping them by prefix is what the
  // coordinator does after a transition.
  KvStoreClient store({.endpoint = server.endpoint(), .timeout = 2s});
  EXPECT_GT(store.count_prefix(gloo_store_prefix(1)), 0u);
  store.delete_prefix(gloo_store_prefix(1));
  store.delete_prefix(gloo_store_prefix(2));
  EXPECT_EQ(store.count_prefix("gloo/"), 0u);
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooProcesses, testing::Values(1, 2, 3, 4, 5),
                         [](const testing::TestParamInfo<int>& param) {
                           return cat("R", param.param);
                         });

TEST(GlooLostPeer, DeadPeerFailsTheOthersFast) {
  KvStoreServer server;
  expect_all_succeeded(run_ranks("dead_peer", server.endpoint(), 3, 2s, 20s));
}

TEST(GlooLostPeer, StalledPeerFailsTheOthersAtTheTimeout) {
  KvStoreServer server;
  expect_all_succeeded(run_ranks("stalled_peer", server.endpoint(), 3, 1s, 20s));
}

TEST(GlooLostPeer, MissingRankFailsTheRendezvous) {
  KvStoreServer server;
  expect_all_succeeded(run_ranks("missing_rank", server.endpoint(), 2, 1s, 20s));
}

}  // namespace
}  // namespace tidal

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "--worker") return tidal::run_worker(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
