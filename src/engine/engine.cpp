// Engine: request admission, the step loop, stop conditions and streaming text.
#include "engine/engine.h"

#include <algorithm>

#include "common/logging.h"
#include "common/phase_clock.h"
#include "engine/expert_parallel.h"

namespace tidal {
namespace {

KvCacheSizing sizing_of(const EngineOptions& options) {
  return {.num_blocks = options.num_kv_blocks,
          .bytes = options.kv_cache_bytes,
          .gpu_memory_utilization = options.gpu_memory_utilization,
          .cpu_kvcache_space = options.cpu_kvcache_space};
}

// Kept free when the KV cache is cut from device memory, for what is allocated after it: the
// decode graphs' executables, and in a group the communicator a transition forms next to the
// current one (NCCL's buffers).
constexpr size_t kGraphCaptureReserve = size_t{256} << 20;
constexpr size_t kStandbyCommunicatorReserve = size_t{512} << 20;

// The largest position <= end that does not split a UTF-8 character of `text`.
size_t utf8_boundary_before(const std::string& text, size_t end) {
  while (end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
    --end;
  }
  return end;
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "";
}

Engine::Engine(Backend& backend, CausalLm& model, const Tokenizer& tokenizer, EngineOptions options)
    : backend_(&backend),
      model_(&model),
      tokenizer_(&tokenizer),
      options_(options),
      kv_plan_(initial_kv_plan()),
      kv_sized_(!sized_from_device_memory(sizing_of(options), backend.device())),
      kv_cache_(backend, model.config(), kv_plan_.num_blocks, options.block_size),
      blocks_(kv_cache_.num_blocks(), options.block_size),
      scheduler_(options.scheduler, blocks_),
      runner_(backend, model, kv_cache_, options.decode_graphs) {
  if (options_.scheduler.max_admission_delay_steps < 0) {
    // Without decode graphs a step with prompt tokens costs what a decode step does: no reason
    // to make arrivals wait.
    scheduler_.set_max_admission_delay(runner_.captures_graphs() ? kDefaultAdmissionDelaySteps : 0);
  }
  if (kv_sized_) {
    settle_kv_cache();
    if (kv_plan_.source == KvCacheSource::kCpuSpace) {
      const MemoryInfo memory = backend.memory_info();
      if (memory.free_bytes > 0 && memory.free_bytes < kv_plan_.bytes()) {
        log_warning("--cpu-kvcache-space ", format_bytes(kv_plan_.budget_bytes),
                    " is more than the ", format_bytes(memory.free_bytes),
                    " of memory available now");
      }
    }
    return;
  }
  // Sized by the first warm_up. Until then the rank reports the length it was asked for, or the
  // model's; the cache, once sized, must hold it.
  const int64_t model_len = model.config().max_position_embeddings;
  if (options.max_model_len > model_len) {
    TIDAL_FAIL("--max-model-len ", options.max_model_len,
               " exceeds the model's max_position_embeddings (", model_len, ")");
  }
  max_model_len_ = options.max_model_len > 0 ? options.max_model_len : model_len;
}

KvCachePlan Engine::initial_kv_plan() const {
  const size_t per_block =
      KvCache::bytes_per_block(model_->config(), options_.block_size, backend_->activation_dtype());
  const KvCacheSizing sizing = sizing_of(options_);
  if (sized_from_device_memory(sizing, backend_->device())) {
    // The worst-case step reads block 0 and writes nothing: one block is all it needs.
    return {.num_blocks = 1,
            .block_size = options_.block_size,
            .bytes_per_block = per_block,
            .budget_bytes = per_block,
            .source = KvCacheSource::kDeviceMemory,
            .utilization = sizing.gpu_memory_utilization};
  }
  return plan_kv_cache(sizing, backend_->device(), options_.block_size, per_block, {}, 0);
}

void Engine::settle_kv_cache() {
  max_model_len_ = resolve_max_model_len(options_.max_model_len,
                                         model_->config().max_position_embeddings, kv_plan_);
  log_info(describe_kv_cache(kv_plan_, max_model_len_));
}

void Engine::size_kv_from_device_memory(const MemoryInfo& before_warm_up) {
  MemoryInfo now = backend_->memory_info();
  // What the worst-case step allocated: workspace, kernel scratch, sampling and graph inputs.
  const size_t step_bytes =
      before_warm_up.free_bytes > now.free_bytes ? before_warm_up.free_bytes - now.free_bytes : 0;
  size_t reserve = runner_.captures_graphs() ? kGraphCaptureReserve : 0;
  if (options_.dp_group != nullptr) {
    reserve += kStandbyCommunicatorReserve;
    // Expert parallelism's exchange buffers grow with the group: a scale-up's warm-up, after its
    // commit point, grows them on every rank. Room for the largest group the ranks may reach is
    // kept now, computed from the buffers' shapes rather than scaled from the step measured at
    // this size, so that every rank (one that joins a larger group later too) keeps room for
    // the same largest step and gets the same cache on the same device.
    const int64_t ranks = options_.dp_group->size();
    if (options_.max_num_ranks > ranks) {
      const ModelConfig& config = model_->config();
      int64_t moe_layers = 0;
      for (int64_t layer = 0; layer < config.num_layers; ++layer) {
        if (config.is_moe_layer(layer)) ++moe_layers;
      }
      reserve += static_cast<size_t>((options_.max_num_ranks - ranks) * moe_layers) *
                 ExpertParallelExecutor::workspace_bytes_per_rank(
                     options_.scheduler.max_num_batched_tokens, config.num_experts_per_tok,
                     config.hidden_size, backend_->activation_dtype());
    }
  }
  // The placeholder's block comes back when it is freed.
  now.free_bytes += static_cast<size_t>(kv_cache_.num_blocks()) * kv_plan_.bytes_per_block;
  kv_plan_ = plan_kv_cache(sizing_of(options_), backend_->device(), options_.block_size,
                           kv_plan_.bytes_per_block, now, reserve);
  log_info("KV cache sizing: ", format_bytes(now.total_bytes), " device, ",
           format_bytes(now.total_bytes - std::min(now.free_bytes, now.total_bytes)),
           " in use after the worst-case step (which took ", format_bytes(step_bytes), "), ",
           format_bytes(reserve), " kept for graphs and transitions");
  kv_cache_.reallocate(kv_plan_.num_blocks);
  blocks_.reset(kv_plan_.num_blocks);
  kv_sized_ = true;
  const int64_t reported = max_model_len_;
  settle_kv_cache();
  if (max_model_len_ < reported) {
    // Only a rank that reported its length before its first warm-up (a joining GPU rank) can see
    // this: requests longer than this are refused here.
    log_warning("max_model_len falls from ", reported, " to ", max_model_len_,
                " now that the KV cache is sized");
  }
}

void Engine::warm_up() {
  const int64_t max_num_seqs = options_.scheduler.max_num_seqs;
  const int64_t max_num_tokens = options_.scheduler.max_num_batched_tokens;
  const bool sizing = !kv_sized_;
  const MemoryInfo before = sizing ? backend_->memory_info() : MemoryInfo{};
  // The order a GPU needs: the worst case sizes the workspace on a placeholder cache, the KV
  // cache takes what it left, and only then are graphs captured (they bake its addresses in).
  runner_.warm_up_workspace(max_num_seqs, max_num_tokens, max_model_len_);
  if (sizing) size_kv_from_device_memory(before);
  runner_.capture_decode_graphs(std::min(max_num_seqs, max_num_tokens));
  log_info("warm-up done: workspace locked at ", runner_.workspace().capacity_bytes(), " bytes, ",
           kv_cache_.num_blocks(), " KV blocks of ", options_.block_size, " tokens, ",
           runner_.num_decode_graphs(), " decode graphs captured in ",
           runner_.last_capture_seconds(), " s");
}

Status Engine::add_request(const std::string& id, std::vector<int32_t> prompt_ids,
                           SamplingParams params) {
  if (live_ids_.contains(id))
    return Status::invalid_argument(cat("duplicate request id '", id, "'"));
  if (Status status = check_request(prompt_ids, params); !status.is_ok()) return status;
  auto request = std::make_unique<Request>();
  request->id = id;
  request->prompt_ids = std::move(prompt_ids);
  request->seed = params.seed ? *params.seed : (uint64_t{entropy_()} << 32) ^ entropy_();
  request->detokenizer =
      std::make_unique<IncrementalDetokenizer>(*tokenizer_, params.skip_special_tokens);
  if (params.structured_output.active()) {
    try {
      request->grammar = grammars().start(params.structured_output, {});
    } catch (const Error& error) {
      return Status::invalid_argument(error.what());
    }
  }
  request->params = std::move(params);
  live_ids_.insert(id);
  scheduler_.add(std::move(request));
  return Status::ok();
}

Status Engine::check_request(const std::vector<int32_t>& prompt_ids,
                             const SamplingParams& params) const {
  if (prompt_ids.empty()) return Status::invalid_argument("the prompt is empty");
  const int32_t vocab = static_cast<int32_t>(model_->config().vocab_size);
  for (const int32_t token : prompt_ids) {
    if (token < 0 || token >= vocab) {
      return Status::invalid_argument(
          cat("prompt token id ", token, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (static_cast<int64_t>(prompt_ids.size()) >= max_model_len_) {
    return Status::invalid_argument(cat("the prompt has ", prompt_ids.size(),
                                        " tokens; the maximum model length is ", max_model_len_,
                                        " tokens including the output"));
  }
  return params.validate(vocab);
}

void Engine::append_token(Request& request, const SampledToken& sampled) {
  const SamplingParams& params = request.params;
  const int32_t token = sampled.token;
  request.output_ids.push_back(token);
  if (params.logprobs) request.logprobs.push_back(token_logprob(sampled));
  const size_t text_before = request.text.size();
  request.text += request.detokenizer->push(token);
  if (request.grammar) {
    // The sampler drew from the ids the grammar allowed.
    TIDAL_CHECK(request.grammar->accept(token), "request '", request.id, "': token ", token,
                " is outside its grammar");
    if (request.grammar->terminated()) {
      // The grammar is complete and its stop id came: nothing may follow, ignore_eos or not.
      request.finish_reason = FinishReason::kStop;
      return;
    }
  }

  const auto num_output = static_cast<int64_t>(request.output_ids.size());
  const std::vector<int32_t>& eos = model_->config().eos_token_ids;
  const bool stop_token =
      (!params.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) ||
      std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) !=
          params.stop_token_ids.end();
  if (num_output >= params.min_tokens && stop_token) {
    request.finish_reason = FinishReason::kStop;
  } else if (num_output >= params.min_tokens && !params.stop.empty()) {
    // Only text that this token added can complete a stop string.
    size_t longest = 0;
    for (const std::string& stop : params.stop) longest = std::max(longest, stop.size());
    const size_t search_from = text_before >= longest ? text_before - longest + 1 : 0;
    size_t cut = std::string::npos;
    for (const std::string& stop : params.stop) {
      cut = std::min(cut, request.text.find(stop, search_from));
    }
    if (cut != std::string::npos) {
      request.text.resize(cut);
      request.text_sent = std::min(request.text_sent, cut);
      request.finish_reason = FinishReason::kStop;
      return;
    }
  }
  if (!request.finished() &&
      (num_output >= params.max_tokens || request.num_tokens() >= max_model_len_)) {
    request.finish_reason = FinishReason::kLength;
  }
  if (request.finished()) request.text += request.detokenizer->flush();
}

RequestOutput Engine::drain_output(Request& request, std::vector<int32_t> new_ids,
                                   std::vector<TokenLogprob> new_logprobs) {
  RequestOutput output{.request_id = request.id,
                       .new_token_ids = std::move(new_ids),
                       .new_text = {},
                       .new_logprobs = std::move(new_logprobs),
                       .finish_reason = request.finish_reason,
                       .num_prompt_tokens = static_cast<int64_t>(request.prompt_ids.size()),
                       .num_output_tokens = static_cast<int64_t>(request.output_ids.size())};
  // While running, hold back text that could still turn out to be the start of a stop string.
  size_t end = request.text.size();
  if (!request.finished()) {
    size_t longest = 0;
    for (const std::string& stop : request.params.stop) longest = std::max(longest, stop.size());
    if (longest > 1) end = end > longest - 1 ? end - (longest - 1) : 0;
    end = utf8_boundary_before(request.text, end);
  }
  if (end > request.text_sent) {
    output.new_text = request.text.substr(request.text_sent, end - request.text_sent);
    request.text_sent = end;
  }
  return output;
}

std::vector<RequestOutput> Engine::step() {
  std::vector<RequestOutput> outputs;
  ModelRunner::GroupStep group_step;
  PhaseClock clock;
  const std::vector<ScheduledRequest> batch = scheduler_.schedule();
  step_seconds_.schedule += clock.lap();
  if (options_.dp_group == nullptr) {
    if (batch.empty()) return outputs;
  } else {
    // In a group, the caller has agreed with the other ranks to step. They agree again on the
    // step's shape: the largest token count (every rank pads to it, so the expert-parallel
    // exchanges match) and whether every rank can replay a decode graph. A rank without work
    // takes part with padding only.
    const ModelRunner::GroupStep proposal = runner_.propose(batch);
    int64_t shape[2] = {proposal.tokens, proposal.replay ? 0 : 1};
    options_.dp_group->all_reduce_max(shape);
    group_step = {.tokens = shape[0], .replay = shape[1] == 0};
    step_seconds_.agree += clock.lap();
    if (batch.empty()) {
      runner_.run_dummy(group_step);
      step_seconds_.forward += clock.lap();
      return outputs;
    }
  }
  const StepSamples samples =
      options_.dp_group == nullptr ? runner_.run(batch) : runner_.run(batch, group_step);
  // Prompt (or preemption recompute) steps apart from pure decode: a served rate's gap to the
  // engine's decode rate is mostly the prefill time, and this says how much.
  const bool decode_only = std::ranges::all_of(batch, [](const ScheduledRequest& s) {
    return s.num_new_tokens == 1 && s.request->num_computed_tokens == s.request->num_tokens() - 1;
  });
  (decode_only ? step_seconds_.forward : step_seconds_.prefill) += clock.lap();
  for (size_t row = 0; row < samples.requests.size(); ++row) {
    Request& request = *samples.requests[row];
    const SampledToken& sampled = samples.tokens[row];
    // Only a vocabulary banned whole (EOS before min_tokens) leaves nothing to draw; validation
    // keeps stop ids inside the vocabulary, so this is a bug, not a request's fault.
    TIDAL_CHECK(sampled.token >= 0, "request '", request.id, "': every token id is banned");
    append_token(request, sampled);
    std::vector<TokenLogprob> new_logprobs;
    if (request.params.logprobs) new_logprobs.push_back(request.logprobs.back());
    outputs.push_back(drain_output(request, {sampled.token}, std::move(new_logprobs)));
    if (request.params.prompt_logprobs && !request.prompt_logprobs_sent) {
      // Every prompt position has been scored by now (the prompt is all in the cache).
      outputs.back().prompt_logprobs = std::move(request.prompt_logprobs);
      request.prompt_logprobs_sent = true;
    }
  }
  for (std::unique_ptr<Request>& finished : scheduler_.complete_step(batch)) {
    live_ids_.erase(finished->id);
  }
  step_seconds_.outputs += clock.lap();
  return outputs;
}

std::vector<RequestOutput> Engine::abort(const std::string& id) {
  std::unique_ptr<Request> request = scheduler_.remove(id);
  if (request == nullptr) return {};
  live_ids_.erase(id);
  request->finish_reason = FinishReason::kAbort;
  return {drain_output(*request, {}, {})};
}

std::vector<RequestHandoff> Engine::release_all() {
  std::vector<RequestHandoff> released;
  for (std::unique_ptr<Request>& request : scheduler_.remove_all()) {
    live_ids_.erase(request->id);
    released.push_back({.id = request->id,
                        .prompt_ids = std::move(request->prompt_ids),
                        .params = std::move(request->params),
                        .output_ids = std::move(request->output_ids),
                        .text_sent = request->text_sent,
                        .seed = request->seed,
                        .num_preemptions = request->num_preemptions});
  }
  return released;
}

Status Engine::adopt(RequestHandoff handoff) {
  if (live_ids_.contains(handoff.id)) {
    return Status::invalid_argument(cat("duplicate request id '", handoff.id, "'"));
  }
  const auto num_tokens =
      static_cast<int64_t>(handoff.prompt_ids.size() + handoff.output_ids.size());
  if (handoff.prompt_ids.empty() || num_tokens >= max_model_len_) {
    return Status::invalid_argument(cat("request '", handoff.id, "' has ", num_tokens,
                                        " tokens; this rank's maximum model length is ",
                                        max_model_len_));
  }
  const auto vocab = static_cast<int32_t>(model_->config().vocab_size);
  if (Status status = handoff.params.validate(vocab); !status.is_ok()) return status;
  auto request = std::make_unique<Request>();
  request->id = handoff.id;
  request->prompt_ids = std::move(handoff.prompt_ids);
  request->params = std::move(handoff.params);
  request->num_preemptions = handoff.num_preemptions;
  request->seed = handoff.seed;
  // Replaying the detokenizer rebuilds the text exactly as the old rank had it; what the client
  // already has is marked sent.
  request->detokenizer =
      std::make_unique<IncrementalDetokenizer>(*tokenizer_, request->params.skip_special_tokens);
  for (const int32_t token : handoff.output_ids) request->text += request->detokenizer->push(token);
  TIDAL_CHECK(handoff.text_sent <= request->text.size(), "request '", handoff.id,
              "': ", handoff.text_sent, " bytes were sent but its output decodes to only ",
              request->text.size());
  request->text_sent = handoff.text_sent;
  if (request->params.structured_output.active()) {
    // The grammar's state is the output so far, replayed: nothing else needs to travel.
    try {
      request->grammar = grammars().start(request->params.structured_output, handoff.output_ids);
    } catch (const Error& error) {
      return Status::invalid_argument(cat("request '", handoff.id, "': ", error.what()));
    }
  }
  request->output_ids = std::move(handoff.output_ids);
  live_ids_.insert(request->id);
  scheduler_.add(std::move(request));
  return Status::ok();
}

GrammarEngine& Engine::grammars() {
  // Made at the first request with a grammar: the vocabulary's table costs a pass over it.
  if (!grammars_) {
    grammars_ = std::make_unique<GrammarEngine>(*tokenizer_,
                                                static_cast<int32_t>(model_->config().vocab_size),
                                                model_->config().eos_token_ids);
  }
  return *grammars_;
}

}  // namespace tidal
