// Test support for the tiny-model fixture.
#include "support/fixture.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "model/load_model.h"

namespace tidal::testing_util {

std::vector<ReferencePrompt> load_reference(const std::string& variant,
                                            const std::string& fixture) {
  const std::string path = fixture_model_dir(fixture) + ".reference.json";
  std::ifstream in(path);
  if (!in) throw Error(cat(path, ": cannot open the reference file"));
  const nlohmann::json reference = nlohmann::json::parse(in);
  std::vector<ReferencePrompt> prompts;
  for (const nlohmann::json& entry : reference.at("variants").at(variant).at("prompts")) {
    ReferencePrompt prompt;
    prompt.text = entry.at("text").get<std::string>();
    prompt.prompt_ids = entry.at("prompt_token_ids").get<std::vector<int32_t>>();
    prompt.greedy_ids = entry.at("greedy_token_ids").get<std::vector<int32_t>>();
    for (const nlohmann::json& step : entry.at("top_logprobs")) {
      std::vector<std::pair<int32_t, float>> top;
      for (const nlohmann::json& pair : step) top.emplace_back(pair.at(0), pair.at(1));
      prompt.top_logprobs.push_back(std::move(top));
    }
    prompts.push_back(std::move(prompt));
  }
  return prompts;
}

LoadedModel load_cpu_model(const std::string& directory) {
  LoadedModel loaded;
  loaded.backend = make_backend("cpu");
  loaded.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_file(directory));
  loaded.model = load_model(directory, *loaded.backend);
  return loaded;
}

std::vector<Completion> run_to_completion(Engine& engine,
                                          const std::vector<std::vector<int32_t>>& prompts,
                                          const SamplingParams& params) {
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string id = cat("r", i);
    index_of[id] = i;
    const Status status = engine.add_request(id, prompts[i], params);
    EXPECT_TRUE(status.is_ok()) << status.message();
  }
  std::vector<Completion> completions(prompts.size());
  for (int step = 0; engine.has_work(); ++step) {
    if (step > 100000) {
      ADD_FAILURE() << "the engine did not finish within 100000 steps";
      break;
    }
    for (const RequestOutput& output : engine.step()) {
      Completion& completion = completions[index_of.at(output.request_id)];
      completion.token_ids.insert(completion.token_ids.end(), output.new_token_ids.begin(),
                                  output.new_token_ids.end());
      completion.text += output.new_text;
      completion.logprobs.insert(completion.logprobs.end(), output.new_logprobs.begin(),
                                 output.new_logprobs.end());
      if (output.finished()) completion.finish_reason = output.finish_reason;
    }
  }
  return completions;
}

ModelDirCopy::ModelDirCopy() {
  std::string pattern = (std::filesystem::temp_directory_path() / "tidal_model_XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw Error("cannot create a scratch directory");
  path_ = pattern;
  std::filesystem::copy(fixture_model_dir(), path_, std::filesystem::copy_options::recursive);
}

ModelDirCopy::~ModelDirCopy() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace tidal::testing_util
