// Decode through the engine's CUDA graphs on the fixture: the warm-up captures one graph per
// batch-size bucket, decode steps replay them (padded to the bucket), and the greedy tokens are
// those of the same engine launching every kernel eagerly, and transformers'. Ten requests of
// different lengths shrink the batch through the buckets 16, 8, 4, 2 and 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/load_model.h"
#include "support/fixture.h"

namespace tidal {
namespace {

struct Decoded {
  std::map<std::string, std::vector<int32_t>> tokens;  // by request id
  int64_t num_steps = 0;
};

// Request p asks for max_tokens[p] greedy tokens; steps until every request finishes.
Decoded decode(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
               const std::vector<int64_t>& max_tokens) {
  Decoded result;
  for (size_t p = 0; p < prompts.size(); ++p) {
    SamplingParams params;
    params.temperature = 0;
    params.ignore_eos = true;
    params.max_tokens = max_tokens[p];
    const Status status = engine.add_request("r" + std::to_string(p), prompts[p], params);
    EXPECT_TRUE(status.is_ok()) << status.message();
  }
  size_t finished = 0;
  while (finished < prompts.size() && result.num_steps < 1000) {
    for (const RequestOutput& output : engine.step()) {
      std::vector<int32_t>& tokens = result.tokens[output.request_id];
      tokens.insert(tokens.end(), output.new_token_ids.begin(), output.new_token_ids.end());
      if (output.finished()) ++finished;
    }
    ++result.num_steps;
  }
  EXPECT_EQ(finished, prompts.size()) << "the engine did not finish every request";
  return result;
}

TEST(EngineGraphs, DecodeReplaysBucketsAndKeepsTheEagerTokens) {
  const std::vector<testing_util::ReferencePrompt> reference =
      testing_util::load_reference("default");
  ASSERT_GE(reference.size(), 10u);
  const auto backend = make_backend("cuda");
  const std::string directory = testing_util::fixture_model_dir();
  const auto model = load_model(directory, *backend);
  const Tokenizer tokenizer = Tokenizer::from_file(directory);

  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_tokens;
  for (size_t p = 0; p < 10; ++p) {
    prompts.push_back(reference[p].prompt_ids);
    max_tokens.push_back(std::min<int64_t>(4 + 3 * static_cast<int64_t>(p),
                                           static_cast<int64_t>(reference[p].greedy_ids.size())));
  }

  EngineOptions eager_options;
  eager_options.decode_graphs.enabled = false;
  // A fixed cache: the graph engine below, alive beside it, sizes its own from the memory left.
  eager_options.kv_cache_bytes = size_t{256} << 20;
  Engine eager_engine(*backend, *model, tokenizer, eager_options);
  eager_engine.warm_up();
  EXPECT_EQ(eager_engine.runner().num_decode_graphs(), 0);
  const Decoded eager = decode(eager_engine, prompts, max_tokens);
  EXPECT_EQ(eager_engine.runner().num_graph_steps(), 0);

  const int64_t captures_before = backend->num_captures();
  EngineOptions graph_options;  // graphs on by default
  Engine graph_engine(*backend, *model, tokenizer, graph_options);
  graph_engine.warm_up();
  const auto buckets = static_cast<int64_t>(
      ModelRunner::decode_graph_buckets(graph_options.scheduler.max_num_seqs).size());
  EXPECT_EQ(graph_engine.runner().num_decode_graphs(), buckets);
  EXPECT_EQ(backend->num_captures() - captures_before, buckets);
  const Decoded replayed = decode(graph_engine, prompts, max_tokens);

  // Every step after the one prefill step is a decode step, and each one replays a graph.
  EXPECT_EQ(graph_engine.runner().num_graph_steps(), replayed.num_steps - 1);
  for (size_t p = 0; p < prompts.size(); ++p) {
    const std::string id = "r" + std::to_string(p);
    EXPECT_EQ(replayed.tokens.at(id), eager.tokens.at(id)) << "request " << p;
    const std::vector<int32_t> want(
        reference[p].greedy_ids.begin(),
        reference[p].greedy_ids.begin() + static_cast<std::ptrdiff_t>(max_tokens[p]));
    EXPECT_EQ(replayed.tokens.at(id), want) << "request " << p << " against transformers";
  }

  // A second warm-up (what an elastic transition runs) replaces the graphs: one more round.
  graph_engine.warm_up();
  EXPECT_EQ(graph_engine.runner().num_decode_graphs(), buckets);
  EXPECT_EQ(backend->num_captures() - captures_before, 2 * buckets);
  const Decoded again = decode(graph_engine, {prompts[0], prompts[1]}, {8, 8});
  EXPECT_EQ(again.tokens.at("r0"), std::vector<int32_t>(reference[0].greedy_ids.begin(),
                                                        reference[0].greedy_ids.begin() + 8));

  std::printf(
      "[graphs] engine: %lld decode graphs (buckets up to %lld) captured in %.3f s; %lld of %lld "
      "steps replayed; 10 requests identical to eager and to transformers\n",
      static_cast<long long>(buckets), static_cast<long long>(graph_options.scheduler.max_num_seqs),
      graph_engine.runner().last_capture_seconds(), static_cast<long long>(replayed.num_steps - 1),
      static_cast<long long>(replayed.num_steps));
}

}  // namespace
}  // namespace tidal
