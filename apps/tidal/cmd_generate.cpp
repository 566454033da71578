// `tidal generate`: one prompt through the engine, printed as it streams or as one JSON object.
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/tidal/commands.h"
#include "apps/tidal/engine_setup.h"
#include "apps/tidal/int_list.h"
#include "engine/engine.h"
#include "model/load_model.h"

namespace tidal::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::optional<std::string> prompt;
  std::optional<std::string> prompt_token_ids;
  int64_t max_tokens = 32;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  std::optional<int32_t> logprobs;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool json = false;
  EngineSetup setup;
};

std::vector<int32_t> parse_id_list(const std::string& text) {
  const std::vector<int64_t> values =
      parse_int_list(text, "--prompt-token-ids", 0, INT32_MAX, "a token id");
  return {values.begin(), values.end()};
}

nlohmann::json logprobs_json(const std::vector<TokenLogprob>& entries) {
  nlohmann::json list = nlohmann::json::array();
  for (const TokenLogprob& entry : entries) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& [id, logprob] : entry.top) top.push_back({id, logprob});
    list.push_back({{"token_id", entry.token_id}, {"logprob", entry.logprob}, {"top", top}});
  }
  return list;
}

int run_generate(const GenerateOptions& options) {
  const std::string model_dir = options.model.empty() ? default_model_directory() : options.model;
  const Tokenizer tokenizer = Tokenizer::from_file(model_dir);

  std::vector<int32_t> prompt_ids = options.prompt_token_ids
                                        ? parse_id_list(*options.prompt_token_ids)
                                        : tokenizer.encode(*options.prompt);
  SamplingParams params;
  params.max_tokens = options.max_tokens;
  params.temperature = options.temperature;
  params.top_k = options.top_k;
  params.top_p = options.top_p;
  params.seed = options.seed;
  params.logprobs = options.logprobs;
  params.stop = options.stop;
  params.ignore_eos = options.ignore_eos;

  // Either way (one rank here, or rank processes) the request goes through an EngineClient, as
  // it does in the server.
  RunningEngine running = start_engine(options.setup, model_dir, tokenizer);
  EngineClient* client = running.client.get();
  auto queue = std::make_shared<OutputQueue>();
  if (Status status = client->submit("generate-0", prompt_ids, params, queue); !status.is_ok()) {
    TIDAL_FAIL(status.message());
  }

  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  while (finish == FinishReason::kNone) {
    std::optional<RequestOutput> output = queue->pop(std::chrono::milliseconds(100));
    if (!output) continue;
    token_ids.insert(token_ids.end(), output->new_token_ids.begin(), output->new_token_ids.end());
    logprobs.insert(logprobs.end(), output->new_logprobs.begin(), output->new_logprobs.end());
    text += output->new_text;
    if (!options.json) std::cout << output->new_text << std::flush;
    finish = output->finish_reason;
  }
  if (finish == FinishReason::kAbort) TIDAL_FAIL("the request was aborted (see the log above)");
  if (options.json) {
    nlohmann::json result = {{"prompt_token_ids", prompt_ids},
                             {"token_ids", token_ids},
                             {"text", text},
                             {"finish_reason", finish_reason_name(finish)},
                             {"logprobs", nullptr}};
    if (options.logprobs) result["logprobs"] = logprobs_json(logprobs);
    // Invalid UTF-8 cannot occur (the detokenizer replaces it), but never abort on output.
    std::cout << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* command = app.add_subcommand("generate", "Generate a continuation of one prompt");
  command->add_option("--model", options->model,
                      "Hugging Face model directory (default: the bundled tiny model)");
  auto* prompt = command->add_option("--prompt", options->prompt, "prompt text");
  auto* ids = command->add_option("--prompt-token-ids", options->prompt_token_ids,
                                  "prompt as comma-separated token ids");
  prompt->excludes(ids);
  command->add_option("--max-tokens", options->max_tokens, "tokens to generate at most");
  command->add_option("--temperature", options->temperature, "0 (the default) is greedy");
  command->add_option("--top-k", options->top_k, "keep the k most likely tokens (0: all)");
  command->add_option("--top-p", options->top_p, "nucleus sampling mass");
  command->add_option("--seed", options->seed, "seed of this request's sampler");
  command->add_option("--logprobs", options->logprobs, "report the top-K logprobs per token");
  command->add_option("--stop", options->stop, "stop string (repeatable)");
  command->add_flag("--ignore-eos", options->ignore_eos, "keep going past EOS");
  command->add_flag("--json", options->json, "print one JSON object instead of streaming text");
  add_engine_setup_options(*command, options->setup);
  return [options]() {
    if (!options->prompt && !options->prompt_token_ids) {
      TIDAL_FAIL("generate needs --prompt or --prompt-token-ids");
    }
    return run_generate(*options);
  };
}

}  // namespace tidal::cli
