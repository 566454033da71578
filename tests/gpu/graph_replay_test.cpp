// Decode by graph replay on the fixture: one captured decode step, replayed for every step with
// its inputs rewritten in place, gives the same greedy tokens and logits as launching the ops one
// by one, and those tokens are transformers'. One capture, counted by the backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "backend/workspace.h"
#include "engine/kv_cache.h"
#include "model/load_model.h"
#include "support/fixture.h"

namespace tidal {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kBlocksPerSeq = 16;  // 256 tokens a sequence
constexpr int kDecodeSteps = 16;

// A step's inputs in device buffers of fixed addresses, rewritten in place (what a graph reads).
class StepInputs {
 public:
  StepInputs(Backend& backend, int64_t num_tokens, int64_t num_seqs)
      : backend_(&backend), num_tokens_(num_tokens), num_seqs_(num_seqs) {
    batch_.token_ids = make({num_tokens});
    batch_.positions = make({num_tokens});
    batch_.slot_mapping = make({num_tokens});
    batch_.attention.query_start = make({num_seqs + 1});
    batch_.attention.context_lens = make({num_seqs});
    batch_.attention.block_tables = make({num_seqs, kBlocksPerSeq});
    batch_.attention.num_seqs = num_seqs;
    batch_.sample_rows = make({num_seqs});
  }

  // Sequence s runs `tokens[s]` from position `start[s]`; sequence s owns blocks
  // [s * kBlocksPerSeq, (s + 1) * kBlocksPerSeq) and samples its last token.
  const ForwardBatch& write(const std::vector<std::vector<int32_t>>& tokens,
                            const std::vector<int32_t>& start) {
    std::vector<int32_t> ids, positions, slots, query_start{0}, context, tables, samples;
    int64_t max_query = 0;
    for (size_t s = 0; s < tokens.size(); ++s) {
      for (size_t i = 0; i < tokens[s].size(); ++i) {
        const auto position = static_cast<int32_t>(start[s] + static_cast<int32_t>(i));
        ids.push_back(tokens[s][i]);
        positions.push_back(position);
        slots.push_back(static_cast<int32_t>(
            (static_cast<int64_t>(s) * kBlocksPerSeq + position / kBlockSize) * kBlockSize +
            position % kBlockSize));
      }
      query_start.push_back(static_cast<int32_t>(ids.size()));
      context.push_back(start[s] + static_cast<int32_t>(tokens[s].size()));
      for (int64_t b = 0; b < kBlocksPerSeq; ++b) {
        tables.push_back(static_cast<int32_t>(static_cast<int64_t>(s) * kBlocksPerSeq + b));
      }
      samples.push_back(static_cast<int32_t>(ids.size()) - 1);
      max_query = std::max<int64_t>(max_query, static_cast<int64_t>(tokens[s].size()));
    }
    EXPECT_EQ(static_cast<int64_t>(ids.size()), num_tokens_);
    EXPECT_EQ(static_cast<int64_t>(tokens.size()), num_seqs_);
    upload(batch_.token_ids, ids);
    upload(batch_.positions, positions);
    upload(batch_.slot_mapping, slots);
    upload(batch_.attention.query_start, query_start);
    upload(batch_.attention.context_lens, context);
    upload(batch_.attention.block_tables, tables);
    upload(batch_.sample_rows, samples);
    batch_.attention.max_query_len = max_query;
    batch_.attention.max_context_len = *std::max_element(context.begin(), context.end());
    return batch_;
  }

 private:
  Tensor make(std::initializer_list<int64_t> shape) {
    Tensor tensor{.dtype = DType::kI32, .shape = shape, .device = backend_->device()};
    buffers_.push_back(backend_->allocate(tensor.num_bytes()));
    tensor.data = buffers_.back().data();
    return tensor;
  }
  void upload(const Tensor& tensor, const std::vector<int32_t>& values) {
    ASSERT_EQ(static_cast<int64_t>(values.size()), tensor.num_elements());
    backend_->copy_from_host(tensor.data, values.data(), values.size() * sizeof(int32_t));
  }

  Backend* backend_;
  int64_t num_tokens_;
  int64_t num_seqs_;
  std::vector<DeviceBuffer> buffers_;
  ForwardBatch batch_;
};

struct Decoded {
  std::vector<std::vector<int32_t>> tokens;  // per sequence: the prefill's token, then each step's
  std::vector<float> last_logits;
};

std::vector<float> download(Backend& backend, const Tensor& logits) {
  std::vector<float> values(static_cast<size_t>(logits.num_elements()));
  backend.copy_to_host(values.data(), logits.data, logits.num_bytes());
  return values;
}

std::vector<int32_t> argmax_rows(const std::vector<float>& logits, int64_t vocab) {
  std::vector<int32_t> ids;
  for (size_t row = 0; row * static_cast<size_t>(vocab) < logits.size(); ++row) {
    const auto begin = logits.begin() + static_cast<std::ptrdiff_t>(row * vocab);
    ids.push_back(static_cast<int32_t>(std::max_element(begin, begin + vocab) - begin));
  }
  return ids;
}

// Prefills the prompts, then decodes kDecodeSteps greedy steps, eagerly or by replaying one
// captured step.
Decoded decode(Backend& backend, CausalLm& model,
               const std::vector<std::vector<int32_t>>& prompts, bool graphs) {
  const ModelConfig& config = model.config();
  const auto num_seqs = static_cast<int64_t>(prompts.size());
  KvCache cache(backend, config, num_seqs * kBlocksPerSeq, kBlockSize);
  Workspace workspace(backend);
  int64_t prompt_tokens = 0;
  std::vector<int32_t> length;
  for (const auto& prompt : prompts) {
    // A sequence that outgrew its blocks would write into the next sequence's.
    EXPECT_LE(static_cast<int64_t>(prompt.size()) + kDecodeSteps, kBlocksPerSeq * kBlockSize);
    prompt_tokens += static_cast<int64_t>(prompt.size());
    length.push_back(static_cast<int32_t>(prompt.size()));
  }
  StepInputs prefill(backend, prompt_tokens, num_seqs);
  workspace.begin_step();
  const Tensor prefill_logits = model.forward(
      prefill.write(prompts, std::vector<int32_t>(prompts.size(), 0)), cache.layers(), workspace);
  std::vector<int32_t> next = argmax_rows(download(backend, prefill_logits), config.vocab_size);

  Decoded result;
  result.tokens.resize(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) result.tokens[s].push_back(next[s]);
  StepInputs step(backend, num_seqs, num_seqs);
  int64_t graph = -1;
  Tensor graph_logits;
  for (int i = 0; i < kDecodeSteps; ++i) {
    std::vector<std::vector<int32_t>> tokens;
    for (const int32_t id : next) tokens.push_back({id});
    const ForwardBatch& batch = step.write(tokens, length);
    Tensor logits;
    if (!graphs) {
      workspace.begin_step();
      logits = model.forward(batch, cache.layers(), workspace);
    } else {
      if (graph < 0) {
        // One eager step of this shape sizes the workspace, then the capture (which runs
        // nothing), then the replay that computes this step.
        workspace.begin_step();
        model.forward(batch, cache.layers(), workspace);
        workspace.begin_step();
        backend.begin_capture();
        graph_logits = model.forward(batch, cache.layers(), workspace);
        graph = backend.end_capture();
      }
      backend.replay(graph);
      logits = graph_logits;
    }
    const std::vector<float> values = download(backend, logits);
    next = argmax_rows(values, config.vocab_size);
    for (size_t s = 0; s < prompts.size(); ++s) {
      result.tokens[s].push_back(next[s]);
      ++length[s];
    }
    result.last_logits = values;
  }
  return result;
}

TEST(CudaGraphs, ReplayGivesTheEagerTokensOnTheFixture) {
  const std::vector<testing_util::ReferencePrompt> reference =
      testing_util::load_reference("default");
  ASSERT_GE(reference.size(), 3u);
  const auto backend = make_backend("cuda");
  ASSERT_TRUE(backend->supports_graphs());
  const auto model = load_model(testing_util::fixture_model_dir(), *backend);
  const std::vector<std::vector<int32_t>> prompts = {
      reference[0].prompt_ids, reference[1].prompt_ids, reference[2].prompt_ids};

  const Decoded eager = decode(*backend, *model, prompts, false);
  EXPECT_EQ(backend->num_captures(), 0);
  const Decoded replayed = decode(*backend, *model, prompts, true);
  EXPECT_EQ(backend->num_captures(), 1) << "one capture, replayed for every step";

  for (size_t s = 0; s < prompts.size(); ++s) {
    EXPECT_EQ(replayed.tokens[s], eager.tokens[s]) << "sequence " << s;
    // The eager tokens are transformers' (so the inputs above are laid out right).
    const std::vector<int32_t> want(
        reference[s].greedy_ids.begin(),
        reference[s].greedy_ids.begin() +
            static_cast<std::ptrdiff_t>(
                std::min(eager.tokens[s].size(), reference[s].greedy_ids.size())));
    EXPECT_EQ(
        std::vector<int32_t>(eager.tokens[s].begin(),
                             eager.tokens[s].begin() + static_cast<std::ptrdiff_t>(want.size())),
        want)
        << "sequence " << s;
  }
  ASSERT_EQ(replayed.last_logits.size(), eager.last_logits.size());
  float max_diff = 0;
  for (size_t i = 0; i < eager.last_logits.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(replayed.last_logits[i] - eager.last_logits[i]));
  }
  std::printf(
      "[graphs] %zu sequences x %d decode steps: replay == eager tokens, max |logit "
      "diff| %.3g, %lld capture(s)\n",
      prompts.size(), kDecodeSteps, static_cast<double>(max_diff),
      static_cast<long long>(backend->num_captures()));
  EXPECT_LE(max_diff, 1e-3f);
}

}  // namespace
}  // namespace tidal
