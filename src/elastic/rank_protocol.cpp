// msgpack encoding of the control-plane messages.
#include "elastic/rank_protocol.h"

#include "common/error.h"

namespace tidal::rank_protocol {

std::string encode(const nlohmann::json& message) {
  const std::vector<uint8_t> bytes = nlohmann::json::to_msgpack(message);
  return {bytes.begin(), bytes.end()};
}

nlohmann::json decode(const std::string& bytes) {
  nlohmann::json message = nlohmann::json::from_msgpack(bytes, true, false);
  if (message.is_discarded() || !message.is_object() || !message.contains("type")) {
    TIDAL_FAIL("malformed control message of ", bytes.size(), " bytes");
  }
  return message;
}

nlohmann::json to_json(const RankConfig& config) {
  return {{"type", kConfig},
          {"model_directory", config.model_directory},
          {"dummy", config.dummy ? nlohmann::json{{"config_file", config.dummy->config_file},
                                                  {"num_layers", config.dummy->num_layers},
                                                  {"seed", config.dummy->seed}}
                                 : nlohmann::json(nullptr)},
          {"device", config.device},
          {"rank", config.rank},
          {"num_ranks", config.num_ranks},
          {"epoch", config.epoch},
          {"slots_per_rank", config.slots_per_rank},
          {"max_num_ranks", config.max_num_ranks},
          {"placements", config.placements},
          {"joining", config.joining},
          {"store_endpoint", config.store_endpoint},
          {"max_num_seqs", config.engine.scheduler.max_num_seqs},
          {"max_num_batched_tokens", config.engine.scheduler.max_num_batched_tokens},
          {"max_admission_delay_steps", config.engine.scheduler.max_admission_delay_steps},
          {"block_size", config.engine.block_size},
          {"num_kv_blocks", config.engine.num_kv_blocks},
          {"kv_cache_bytes", config.engine.kv_cache_bytes},
          {"gpu_memory_utilization", config.engine.gpu_memory_utilization},
          {"cpu_kvcache_space", config.engine.cpu_kvcache_space},
          {"max_model_len", config.engine.max_model_len},
          {"decode_graphs", config.engine.decode_graphs.enabled},
          {"max_seq_len_to_capture", config.engine.decode_graphs.max_context},
          {"comm_timeout_ms", config.comm_timeout_ms},
          {"prepare_timeout_ms", config.prepare_timeout_ms},
          {"enable_eplb", config.enable_eplb},
          {"eplb_window", config.eplb_window},
          {"eplb_interval", config.eplb_interval},
          {"eplb_layers_per_step", config.eplb_layers_per_step}};
}

RankConfig config_from_json(const nlohmann::json& message) {
  RankConfig config;
  config.model_directory = message.at("model_directory").get<std::string>();
  if (const nlohmann::json& dummy = message.at("dummy"); !dummy.is_null()) {
    config.dummy = DummyModelOptions{.config_file = dummy.at("config_file").get<std::string>(),
                                     .num_layers = dummy.at("num_layers").get<int64_t>(),
                                     .seed = dummy.at("seed").get<uint64_t>()};
  }
  config.device = message.at("device").get<std::string>();
  config.rank = message.at("rank").get<int>();
  config.num_ranks = message.at("num_ranks").get<int>();
  config.epoch = message.at("epoch").get<uint64_t>();
  config.slots_per_rank = message.at("slots_per_rank").get<int>();
  config.max_num_ranks = message.at("max_num_ranks").get<int>();
  config.placements = message.at("placements").get<std::vector<std::vector<int32_t>>>();
  config.joining = message.at("joining").get<bool>();
  config.store_endpoint = message.at("store_endpoint").get<std::string>();
  config.engine.scheduler.max_num_seqs = message.at("max_num_seqs").get<int64_t>();
  config.engine.scheduler.max_num_batched_tokens =
      message.at("max_num_batched_tokens").get<int64_t>();
  config.engine.scheduler.max_admission_delay_steps =
      message.at("max_admission_delay_steps").get<int64_t>();
  config.engine.block_size = message.at("block_size").get<int64_t>();
  config.engine.num_kv_blocks = message.at("num_kv_blocks").get<int64_t>();
  config.engine.kv_cache_bytes = message.at("kv_cache_bytes").get<size_t>();
  config.engine.gpu_memory_utilization = message.at("gpu_memory_utilization").get<double>();
  config.engine.cpu_kvcache_space = message.at("cpu_kvcache_space").get<size_t>();
  // The KV cache leaves room for the group's largest size (EngineOptions::max_num_ranks).
  config.engine.max_num_ranks = config.max_num_ranks;
  config.engine.max_model_len = message.at("max_model_len").get<int64_t>();
  config.engine.decode_graphs.enabled = message.at("decode_graphs").get<bool>();
  config.engine.decode_graphs.max_context = message.at("max_seq_len_to_capture").get<int64_t>();
  config.comm_timeout_ms = message.at("comm_timeout_ms").get<int64_t>();
  config.prepare_timeout_ms = message.at("prepare_timeout_ms").get<int64_t>();
  config.enable_eplb = message.at("enable_eplb").get<bool>();
  config.eplb_window = message.at("eplb_window").get<int>();
  config.eplb_interval = message.at("eplb_interval").get<int>();
  config.eplb_layers_per_step = message.at("eplb_layers_per_step").get<int>();
  return config;
}

nlohmann::json to_json(const SamplingParams& params) {
  nlohmann::json value = {{"temperature", params.temperature},
                          {"top_k", params.top_k},
                          {"top_p", params.top_p},
                          {"max_tokens", params.max_tokens},
                          {"min_tokens", params.min_tokens},
                          {"stop", params.stop},
                          {"stop_token_ids", params.stop_token_ids},
                          {"ignore_eos", params.ignore_eos},
                          {"skip_special_tokens", params.skip_special_tokens},
                          {"seed", nullptr},
                          {"logprobs", nullptr}};
  if (params.seed) value["seed"] = *params.seed;
  if (params.logprobs) value["logprobs"] = *params.logprobs;
  value["presence_penalty"] = params.presence_penalty;
  value["frequency_penalty"] = params.frequency_penalty;
  value["repetition_penalty"] = params.repetition_penalty;
  value["min_p"] = params.min_p;
  value["logit_bias"] = params.logit_bias;
  value["allowed_token_ids"] = params.allowed_token_ids;
  value["bad_words_ids"] = params.bad_words_ids;
  value["structured_output"] = {{"kind", static_cast<int>(params.structured_output.kind)},
                                {"spec", params.structured_output.spec},
                                {"field", params.structured_output.field}};
  value["prompt_logprobs"] = nullptr;
  if (params.prompt_logprobs) value["prompt_logprobs"] = *params.prompt_logprobs;
  return value;
}

SamplingParams params_from_json(const nlohmann::json& value) {
  SamplingParams params;
  params.temperature = value.at("temperature").get<float>();
  params.top_k = value.at("top_k").get<int32_t>();
  params.top_p = value.at("top_p").get<float>();
  params.max_tokens = value.at("max_tokens").get<int64_t>();
  params.min_tokens = value.at("min_tokens").get<int64_t>();
  params.stop = value.at("stop").get<std::vector<std::string>>();
  params.stop_token_ids = value.at("stop_token_ids").get<std::vector<int32_t>>();
  params.ignore_eos = value.at("ignore_eos").get<bool>();
  params.skip_special_tokens = value.at("skip_special_tokens").get<bool>();
  if (!value.at("seed").is_null()) params.seed = value.at("seed").get<uint64_t>();
  if (!value.at("logprobs").is_null()) params.logprobs = value.at("logprobs").get<int32_t>();
  params.presence_penalty = value.at("presence_penalty").get<float>();
  params.frequency_penalty = value.at("frequency_penalty").get<float>();
  params.repetition_penalty = value.at("repetition_penalty").get<float>();
  params.min_p = value.at("min_p").get<float>();
  params.logit_bias = value.at("logit_bias").get<std::vector<std::pair<int32_t, float>>>();
  params.allowed_token_ids = value.at("allowed_token_ids").get<std::vector<int32_t>>();
  params.bad_words_ids = value.at("bad_words_ids").get<std::vector<std::vector<int32_t>>>();
  const nlohmann::json& structured = value.at("structured_output");
  const int kind = structured.at("kind").get<int>();
  TIDAL_CHECK(kind >= 0 && kind <= static_cast<int>(StructuredOutput::Kind::kGrammar),
              "structured output of kind ", kind);
  params.structured_output = {.kind = static_cast<StructuredOutput::Kind>(kind),
                              .spec = structured.at("spec").get<std::string>(),
                              .field = structured.at("field").get<std::string>()};
  if (!value.at("prompt_logprobs").is_null())
    params.prompt_logprobs = value.at("prompt_logprobs").get<int32_t>();
  return params;
}

namespace {

nlohmann::json logprobs_json(const std::vector<TokenLogprob>& entries) {
  nlohmann::json logprobs = nlohmann::json::array();
  for (const TokenLogprob& entry : entries) {
    logprobs.push_back({entry.token_id, entry.logprob, entry.top});
  }
  return logprobs;
}

std::vector<TokenLogprob> logprobs_from_json(const nlohmann::json& value) {
  std::vector<TokenLogprob> entries;
  for (const nlohmann::json& entry : value) {
    entries.push_back({.token_id = entry.at(0).get<int32_t>(),
                       .logprob = entry.at(1).get<float>(),
                       .top = entry.at(2).get<std::vector<std::pair<int32_t, float>>>()});
  }
  return entries;
}

}  // namespace

nlohmann::json to_json(const RequestOutput& output) {
  return {{"id", output.request_id},
          {"tokens", output.new_token_ids},
          {"text", output.new_text},
          {"logprobs", logprobs_json(output.new_logprobs)},
          {"prompt_logprobs", logprobs_json(output.prompt_logprobs)},
          {"finish", static_cast<int>(output.finish_reason)},
          {"prompt_tokens", output.num_prompt_tokens},
          {"output_tokens", output.num_output_tokens}};
}

RequestOutput output_from_json(const nlohmann::json& value) {
  RequestOutput output;
  output.request_id = value.at("id").get<std::string>();
  output.new_token_ids = value.at("tokens").get<std::vector<int32_t>>();
  output.new_text = value.at("text").get<std::string>();
  output.new_logprobs = logprobs_from_json(value.at("logprobs"));
  output.prompt_logprobs = logprobs_from_json(value.at("prompt_logprobs"));
  const int finish = value.at("finish").get<int>();
  TIDAL_CHECK(finish >= 0 && finish <= static_cast<int>(FinishReason::kAbort),
              "unknown finish reason ", finish);
  output.finish_reason = static_cast<FinishReason>(finish);
  output.num_prompt_tokens = value.at("prompt_tokens").get<int64_t>();
  output.num_output_tokens = value.at("output_tokens").get<int64_t>();
  return output;
}

nlohmann::json to_json(const EngineLoad& load) {
  return {load.num_running,
          load.num_waiting,
          load.num_kv_blocks,
          load.num_free_kv_blocks,
          load.num_preemptions,
          load.num_steps,
          load.num_warm_ups,
          load.num_outstanding_tokens,
          load.eplb_rebalances,
          load.eplb_bytes_moved,
          load.eplb_seconds,
          load.eplb_balancedness_before,
          load.eplb_balancedness_after,
          load.eplb_longest_pause_seconds,
          load.num_decode_graphs,
          load.num_graph_steps,
          {load.step_seconds.schedule, load.step_seconds.agree, load.step_seconds.forward,
           load.step_seconds.outputs, load.step_seconds.balance, load.step_seconds.prefill}};
}

EngineLoad load_from_json(const nlohmann::json& value) {
  EngineLoad load;
  load.num_running = value.at(0).get<int64_t>();
  load.num_waiting = value.at(1).get<int64_t>();
  load.num_kv_blocks = value.at(2).get<int64_t>();
  load.num_free_kv_blocks = value.at(3).get<int64_t>();
  load.num_preemptions = value.at(4).get<int64_t>();
  load.num_steps = value.at(5).get<int64_t>();
  load.num_warm_ups = value.at(6).get<int64_t>();
  load.num_outstanding_tokens = value.at(7).get<int64_t>();
  load.eplb_rebalances = value.at(8).get<int64_t>();
  load.eplb_bytes_moved = value.at(9).get<int64_t>();
  load.eplb_seconds = value.at(10).get<double>();
  load.eplb_balancedness_before = value.at(11).get<std::vector<double>>();
  load.eplb_balancedness_after = value.at(12).get<std::vector<double>>();
  load.eplb_longest_pause_seconds = value.at(13).get<double>();
  load.num_decode_graphs = value.at(14).get<int64_t>();
  load.num_graph_steps = value.at(15).get<int64_t>();
  const auto& seconds = value.at(16);
  load.step_seconds = {.schedule = seconds.at(0).get<double>(),
                       .agree = seconds.at(1).get<double>(),
                       .forward = seconds.at(2).get<double>(),
                       .prefill = seconds.at(5).get<double>(),
                       .outputs = seconds.at(3).get<double>(),
                       .balance = seconds.at(4).get<double>()};
  return load;
}

nlohmann::json to_json(const RequestHandoff& handoff) {
  return {{"id", handoff.id},
          {"prompt_ids", handoff.prompt_ids},
          {"params", to_json(handoff.params)},
          {"output_ids", handoff.output_ids},
          {"text_sent", handoff.text_sent},
          {"seed", handoff.seed},
          {"num_preemptions", handoff.num_preemptions}};
}

RequestHandoff handoff_from_json(const nlohmann::json& value) {
  return {.id = value.at("id").get<std::string>(),
          .prompt_ids = value.at("prompt_ids").get<std::vector<int32_t>>(),
          .params = params_from_json(value.at("params")),
          .output_ids = value.at("output_ids").get<std::vector<int32_t>>(),
          .text_sent = value.at("text_sent").get<size_t>(),
          .seed = value.at("seed").get<uint64_t>(),
          .num_preemptions = value.at("num_preemptions").get<int64_t>()};
}

}  // namespace tidal::rank_protocol
