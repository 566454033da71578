// Many ranks as real processes (Gloo between them): greedy tokens are identical at every rank
// count and placement, redundant replicas included, and equal the transformers reference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/fixture.h"
#include "support/run_tidal.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;
using testing_util::join_ids;
using testing_util::run_tidal;

constexpr size_t kTokens = 24;

// A port nobody listens on now: the kernel's choice for port 0 (a small race remains until the
// front binds it, far smaller than guessing from the pid).
int free_port() {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t size = sizeof(address);
  EXPECT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&address), size), 0);
  EXPECT_EQ(::getsockname(sock, reinterpret_cast<sockaddr*>(&address), &size), 0);
  ::close(sock);
  return ntohs(address.sin_port);
}

std::vector<int32_t> generate(const testing_util::ReferencePrompt& prompt,
                              const std::string& topology) {
  const testing_util::CommandResult result =
      run_tidal("generate --json --ignore-eos --max-tokens " + std::to_string(kTokens) +
                " --prompt-token-ids " + join_ids(prompt.prompt_ids) + " " + topology);
  EXPECT_EQ(result.exit_code, 0) << topology << "\n" << result.err;
  if (result.exit_code != 0) return {};
  return nlohmann::json::parse(result.out).at("token_ids").get<std::vector<int32_t>>();
}

class MultiRank : public ::testing::TestWithParam<std::string> {};

TEST_P(MultiRank, GreedyTokensEqualTheReference) {
  const auto reference = testing_util::load_reference("default");
  // Short, long (chunked over several steps), non-ASCII and chat prompts.
  for (const size_t p : {0u, 1u, 3u, 4u}) {
    const std::vector<int32_t> expected(reference[p].greedy_ids.begin(),
                                        reference[p].greedy_ids.begin() + kTokens);
    EXPECT_EQ(generate(reference[p], GetParam()), expected) << "prompt " << p << ", " << GetParam();
  }
}

// 8 experts: R=1..5 with the default ceil(8/R) slots (R=3: 9 slots, one redundant replica;
// R=5: 10 slots, two), the process path at R=1, and more redundancy by hand.
INSTANTIATE_TEST_SUITE_P(Topologies, MultiRank,
                         ::testing::Values("--ranks 1", "--ranks 1 --expert-slots 8", "--ranks 2",
                                           "--ranks 3", "--ranks 4", "--ranks 5",
                                           "--ranks 3 --expert-slots 4",
                                           "--ranks 2 --expert-slots 6"));

TEST(MultiRankErrors, TooFewSlotsNamesTheMinimum) {
  const testing_util::CommandResult result =
      run_tidal("generate --json --prompt hi --ranks 2 --expert-slots 3");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_THAT(result.err, HasSubstr("need at least ceil(E/S)=3 ranks, got R=2"));
}

// One rank started by the front, the other by hand (as Slurm or ssh would), pointed at the
// coordinator and given the rank secret (both read TIDAL_RANK_SECRET): they form one group and
// give the same tokens.
TEST(MultiRankJoin, ARankStartedByHandJoins) {
  ::setenv("TIDAL_RANK_SECRET", "a-secret-for-this-test-only", 1);
  struct Unset {
    ~Unset() { ::unsetenv("TIDAL_RANK_SECRET"); }
  } unset;
  const auto reference = testing_util::load_reference("default");
  const int port = free_port();
  std::thread by_hand([port] {
    // Started after the front has bound its port; it retries connecting by itself (ZeroMQ).
    const testing_util::CommandResult joined =
        run_tidal("rank --coordinator tcp://127.0.0.1:" + std::to_string(port));
    EXPECT_EQ(joined.exit_code, 0) << joined.err;
  });
  const std::vector<int32_t> tokens = generate(
      reference[0], "--ranks 2 --local-ranks 1 --coordinator-port " + std::to_string(port));
  by_hand.join();
  const std::vector<int32_t> expected(reference[0].greedy_ids.begin(),
                                      reference[0].greedy_ids.begin() + kTokens);
  EXPECT_EQ(tokens, expected);
}

// Expert load balancing with routing skewed by the test-only router bias (inherited by the rank
// processes): rebalancing every few steps moves experts mid-generation, and the greedy tokens
// stay those of the same biased model on one rank without balancing.
TEST(MultiRankEplb, RebalancingKeepsGreedyTokens) {
  ::setenv("TIDAL_TEST_ROUTER_BIAS", "0:8,1:8", 1);
  struct Unset {
    ~Unset() { ::unsetenv("TIDAL_TEST_ROUTER_BIAS"); }
  } unset;
  const auto reference = testing_util::load_reference("default");
  for (const size_t p : {0u, 1u}) {
    const std::vector<int32_t> expected = generate(reference[p], "--ranks 1");
    ASSERT_EQ(expected.size(), kTokens);
    EXPECT_EQ(generate(reference[p], "--ranks 3 --enable-eplb --eplb-interval 4"), expected)
        << "prompt " << p;
    EXPECT_EQ(generate(reference[p],
                       "--ranks 2 --num-redundant-experts 2 --enable-eplb --eplb-interval 4 "
                       "--eplb-window 8"),
              expected)
        << "prompt " << p;
  }
}

// Every other family through rank processes: 1, 2 and 3 ranks (3 ranks of 8 experts: a
// redundant replica), and expert load balancing moving experts mid-generation, give the
// transformers reference. Shared experts, and DeepSeek's latent attention cache, stay on every
// rank.
class FamilyMultiRank : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyMultiRank, GreedyTokensEqualTheReference) {
  const auto reference = testing_util::load_reference("default", GetParam());
  const std::string model = "--model " + testing_util::fixture_model_dir(GetParam()) + " ";
  for (const char* topology :
       {"--ranks 1", "--ranks 2", "--ranks 3", "--ranks 2 --enable-eplb --eplb-interval 4"}) {
    for (const size_t p : {0u, 1u}) {  // short, and long (chunked over several steps)
      const std::vector<int32_t> expected(reference[p].greedy_ids.begin(),
                                          reference[p].greedy_ids.begin() + kTokens);
      EXPECT_EQ(generate(reference[p], model + topology), expected)
          << GetParam() << " prompt " << p << ", " << topology;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyMultiRank,
                         ::testing::Values("tiny-qwen2-moe", "tiny-mixtral",
                                           "tiny-deepseek-v2-lite", "tiny-deepseek-v3"),
                         [](const auto& param_info) {
                           std::string name = param_info.param.substr(5);  // without "tiny-"
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace tidal
