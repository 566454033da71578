// Test support: the bundled tiny model, its transformers reference outputs, and running prompts
// through an Engine to completion.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "engine/engine.h"
#include "model/causal_lm.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal::testing_util {

// The bundled tiny model (the default), or another family's fixture by its folder name.
inline constexpr const char* kDefaultFixture = "tiny-qwen3-moe";
inline std::string fixture_model_dir(const std::string& fixture = kDefaultFixture) {
  return std::string(TIDAL_SOURCE_DIR) + "/tests/fixtures/" + fixture;
}

struct ReferencePrompt {
  std::string text;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> greedy_ids;
  std::vector<std::vector<std::pair<int32_t, float>>> top_logprobs;  // per generated token
};

// The prompts of one variant ("default", "norm_topk_prob_false") of a fixture's reference file.
std::vector<ReferencePrompt> load_reference(const std::string& variant,
                                            const std::string& fixture = kDefaultFixture);

// A model directory on a CPU backend, with its tokenizer.
struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<CausalLm> model;
};
LoadedModel load_cpu_model(const std::string& directory);

struct Completion {
  std::vector<int32_t> token_ids;
  std::string text;  // the concatenation of every step's new_text
  std::vector<TokenLogprob> logprobs;
  FinishReason finish_reason = FinishReason::kNone;
};

// Adds every request ("r0", "r1", ...), steps until all finish (bounded), and returns the
// completions in request order. Fails the test on an add error or a runaway loop.
std::vector<Completion> run_to_completion(Engine& engine,
                                          const std::vector<std::vector<int32_t>>& prompts,
                                          const SamplingParams& params);

// A scratch copy of the fixture model directory, removed on destruction.
class ModelDirCopy {
 public:
  ModelDirCopy();
  ~ModelDirCopy();
  ModelDirCopy(const ModelDirCopy&) = delete;
  ModelDirCopy& operator=(const ModelDirCopy&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace tidal::testing_util
