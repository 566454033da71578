// JSON bodies in the shapes the OpenAI clients expect.
#include "server/response_format.h"

namespace tidal {
namespace {

nlohmann::json finish_json(FinishReason reason) {
  return reason == FinishReason::kNone ? nlohmann::json(nullptr)
                                       : nlohmann::json(finish_reason_name(reason));
}

nlohmann::json bytes_of(const std::string& text) {
  nlohmann::json bytes = nlohmann::json::array();
  for (const char c : text) bytes.push_back(static_cast<unsigned char>(c));
  return bytes;
}

}  // namespace

nlohmann::json ResponseFormat::logprobs_json(const std::vector<TokenLogprob>& entries) const {
  auto token_text = [&](int32_t id) {
    const int32_t ids[] = {id};
    return tokenizer->decode(ids, false);
  };
  if (chat) {
    nlohmann::json content = nlohmann::json::array();
    for (const TokenLogprob& entry : entries) {
      const std::string text = token_text(entry.token_id);
      nlohmann::json top = nlohmann::json::array();
      for (const auto& [id, logprob] : entry.top) {
        const std::string alternative = token_text(id);
        top.push_back(
            {{"token", alternative}, {"logprob", logprob}, {"bytes", bytes_of(alternative)}});
      }
      content.push_back({{"token", text},
                         {"logprob", entry.logprob},
                         {"bytes", bytes_of(text)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  nlohmann::json tokens = nlohmann::json::array(), token_logprobs = nlohmann::json::array(),
                 top_logprobs = nlohmann::json::array(), offsets = nlohmann::json::array();
  size_t offset = 0;
  for (const TokenLogprob& entry : entries) {
    const std::string text = token_text(entry.token_id);
    tokens.push_back(text);
    token_logprobs.push_back(entry.logprob);
    nlohmann::json top = nlohmann::json::object();
    for (const auto& [id, logprob] : entry.top) top[token_text(id)] = logprob;
    top_logprobs.push_back(top);
    offsets.push_back(offset);
    offset += text.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top_logprobs},
          {"text_offset", offsets}};
}

std::vector<ChoiceStream> ResponseFormat::choice_streams(size_t num_choices) const {
  std::vector<ChoiceStream> streams(num_choices);
  if (chat && reasoning_starts_in_thinking) {
    for (ChoiceStream& stream : streams) stream.reasoning.emplace(*reasoning_starts_in_thinking);
  }
  return streams;
}

nlohmann::json ResponseFormat::usage(const Generation& generation) const {
  const int64_t prompt = generation.num_prompt_tokens();
  const int64_t completion = generation.num_completion_tokens();
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

nlohmann::json ResponseFormat::full_response(const Generation& generation) const {
  nlohmann::json choices = nlohmann::json::array();
  for (const Choice& choice : generation.choices()) {
    nlohmann::json entry = {{"index", choice.index},
                            {"logprobs", logprobs ? logprobs_json(choice.logprobs) : nullptr},
                            {"finish_reason", finish_json(choice.finish_reason)}};
    if (chat && reasoning_starts_in_thinking) {
      const ReasoningDelta split =
          ReasoningSplitter::split(choice.text, *reasoning_starts_in_thinking);
      // As vLLM: a part the answer lacks is null.
      entry["message"] = {
          {"role", "assistant"},
          {"content",
           split.content.empty() ? nlohmann::json(nullptr) : nlohmann::json(split.content)},
          {"reasoning_content",
           split.reasoning.empty() ? nlohmann::json(nullptr) : nlohmann::json(split.reasoning)}};
    } else if (chat) {
      entry["message"] = {{"role", "assistant"}, {"content", choice.text}};
    } else {
      entry["text"] = choice.text;
    }
    if (return_token_ids) {
      entry["prompt_token_ids"] = choice.prompt_ids;
      entry["token_ids"] = choice.token_ids;
    }
    choices.push_back(std::move(entry));
  }
  return {{"id", generation.id()},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", generation.created()},
          {"model", model},
          {"choices", choices},
          {"usage", usage(generation)}};
}

nlohmann::json ResponseFormat::chunk_envelope(const Generation& generation,
                                              nlohmann::json choices) const {
  return {{"id", generation.id()},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", generation.created()},
          {"model", model},
          {"choices", std::move(choices)}};
}

std::vector<nlohmann::json> ResponseFormat::stream_chunks(const Generation& generation,
                                                          const Generation::Update& update,
                                                          std::vector<ChoiceStream>& streams,
                                                          bool include_usage) const {
  std::vector<nlohmann::json> chunks;
  const RequestOutput& output = update.output;
  const size_t index = update.choice;
  if (output.finish_reason == FinishReason::kAbort) return chunks;  // nobody is listening
  auto add = [&](nlohmann::json choice) {
    nlohmann::json chunk = chunk_envelope(generation, nlohmann::json::array({std::move(choice)}));
    if (include_usage) chunk["usage"] = nullptr;
    chunks.push_back(std::move(chunk));
  };
  ChoiceStream& stream = streams[index];
  if (chat && !stream.started) {
    stream.started = true;
    add({{"index", index},
         {"delta", {{"role", "assistant"}, {"content", ""}}},
         {"logprobs", nullptr},
         {"finish_reason", nullptr}});
  }
  if (output.new_text.empty() && output.new_token_ids.empty() && !output.finished()) return chunks;
  nlohmann::json choice = {{"index", index},
                           {"logprobs", logprobs ? logprobs_json(output.new_logprobs) : nullptr},
                           {"finish_reason", finish_json(output.finish_reason)}};
  if (chat && stream.reasoning) {
    ReasoningDelta delta = stream.reasoning->push(output.new_text);
    if (output.finished()) {
      const ReasoningDelta rest = stream.reasoning->finish();
      delta.reasoning += rest.reasoning;
      delta.content += rest.content;
    }
    // Bytes that may begin a tag wait for the next chunk: this one may carry no text at all.
    choice["delta"] = nlohmann::json::object();
    if (!delta.reasoning.empty()) choice["delta"]["reasoning_content"] = delta.reasoning;
    if (!delta.content.empty()) choice["delta"]["content"] = delta.content;
  } else if (chat) {
    choice["delta"] = output.new_text.empty() && output.finished()
                          ? nlohmann::json::object()
                          : nlohmann::json{{"content", output.new_text}};
  } else {
    choice["text"] = output.new_text;
  }
  if (return_token_ids) choice["token_ids"] = output.new_token_ids;
  add(std::move(choice));
  return chunks;
}

nlohmann::json ResponseFormat::usage_chunk(const Generation& generation) const {
  nlohmann::json chunk = chunk_envelope(generation, nlohmann::json::array());
  chunk["usage"] = usage(generation);
  return chunk;
}

}  // namespace tidal
