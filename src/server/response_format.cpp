// JSON bodies in the shapes the OpenAI clients expect.
#include "server/response_format.h"

#include "common/error.h"

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

// OpenAI's tool_calls entries; `first` numbers them within the choice.
nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls, const std::string& id_prefix,
                               size_t first, bool with_index) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    nlohmann::json entry = {
        {"id", cat(id_prefix, first + i)},
        {"type", "function"},
        {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (with_index) entry["index"] = first + i;
    out.push_back(std::move(entry));
  }
  return out;
}

// A choice that called tools and then stopped finished with "tool_calls" (as OpenAI reports it).
nlohmann::json finish_with_calls(FinishReason reason, size_t num_calls) {
  if (reason == FinishReason::kStop && num_calls > 0) return "tool_calls";
  return finish_json(reason);
}

}  // namespace

ChatPiece ChoiceStream::push(std::string_view text, bool at_end) {
  ChatPiece piece;
  if (reasoning) {
    ReasoningDelta delta = reasoning->push(text, at_end);
    piece.reasoning = std::move(delta.reasoning);
    piece.content = std::move(delta.content);
  } else {
    piece.content = std::string(text);
  }
  if (tools) {
    ToolCallDelta delta = tools->push(piece.content, at_end);
    piece.content = std::move(delta.content);
    piece.calls = std::move(delta.calls);
  }
  return piece;
}

std::string ResponseFormat::tool_call_id_prefix(const Generation& generation, size_t choice) const {
  return cat("call_", generation.id(), "_", choice, "_");
}

nlohmann::json ResponseFormat::logprobs_json(const std::vector<TokenLogprob>& entries,
                                             const Choice* prompt) const {
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
  // One token of the text; `entry` null for the echoed prompt's first token, which has none.
  const auto append = [&](int32_t id, const TokenLogprob* entry) {
    const std::string text = token_text(id);
    tokens.push_back(text);
    token_logprobs.push_back(entry != nullptr ? nlohmann::json(entry->logprob) : nullptr);
    nlohmann::json top = nullptr;
    if (entry != nullptr) {
      top = nlohmann::json::object();
      for (const auto& [alternative, logprob] : entry->top) top[token_text(alternative)] = logprob;
    }
    top_logprobs.push_back(std::move(top));
    offsets.push_back(offset);
    offset += text.size();
  };
  if (prompt != nullptr) {
    // Echo: each prompt token with its logprob given the ones before it.
    for (size_t i = 0; i < prompt->prompt_ids.size(); ++i) {
      append(prompt->prompt_ids[i], i > 0 && i - 1 < prompt->prompt_logprobs.size()
                                        ? &prompt->prompt_logprobs[i - 1]
                                        : nullptr);
    }
  }
  for (const TokenLogprob& entry : entries) append(entry.token_id, &entry);
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top_logprobs},
          {"text_offset", offsets}};
}

std::vector<ChoiceStream> ResponseFormat::choice_streams(size_t num_choices) const {
  std::vector<ChoiceStream> streams(num_choices);
  for (ChoiceStream& stream : streams) {
    if (chat && reasoning_starts_in_thinking)
      stream.reasoning.emplace(*reasoning_starts_in_thinking);
    if (chat && parse_tool_calls) stream.tools.emplace();
  }
  return streams;
}

nlohmann::json ResponseFormat::prompt_logprobs_json(const Choice& choice) const {
  // vLLM's shape: one entry per prompt token, null for the first; each maps token ids (as
  // strings) to their logprob, rank among the alternatives (null when outside them) and text.
  nlohmann::json out = nlohmann::json::array({nullptr});
  for (const TokenLogprob& entry : choice.prompt_logprobs) {
    nlohmann::json alternatives = nlohmann::json::object();
    const auto add = [&](int32_t id, float logprob, nlohmann::json rank) {
      const int32_t ids[] = {id};
      alternatives[std::to_string(id)] = {{"logprob", logprob},
                                          {"rank", std::move(rank)},
                                          {"decoded_token", tokenizer->decode(ids, false)}};
    };
    nlohmann::json rank = nullptr;
    for (size_t k = 0; k < entry.top.size(); ++k) {
      if (entry.top[k].first == entry.token_id) rank = k + 1;
    }
    add(entry.token_id, entry.logprob, rank);
    for (size_t k = 0; k < entry.top.size(); ++k)
      add(entry.top[k].first, entry.top[k].second, k + 1);
    out.push_back(std::move(alternatives));
  }
  return out;
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
    nlohmann::json entry = {
        {"index", choice.index},
        {"logprobs", logprobs ? logprobs_json(choice.logprobs, echo ? &choice : nullptr) : nullptr},
        {"finish_reason", finish_json(choice.finish_reason)}};
    if (prompt_logprobs) entry["prompt_logprobs"] = prompt_logprobs_json(choice);
    if (chat) {
      ChoiceStream whole = std::move(choice_streams(1)[0]);
      const ChatPiece piece = whole.push(choice.text, /*at_end=*/true);
      const bool parsed = reasoning_starts_in_thinking || parse_tool_calls;
      nlohmann::json message = {{"role", "assistant"}, {"content", piece.content}};
      // As vLLM: with a parser, a part the answer lacks is null.
      if (parsed && piece.content.empty()) message["content"] = nullptr;
      if (reasoning_starts_in_thinking) {
        message["reasoning_content"] =
            piece.reasoning.empty() ? nlohmann::json(nullptr) : nlohmann::json(piece.reasoning);
      }
      if (!piece.calls.empty()) {
        message["tool_calls"] = tool_calls_json(
            piece.calls, tool_call_id_prefix(generation, choice.index), 0, /*with_index=*/false);
      }
      entry["message"] = std::move(message);
      entry["finish_reason"] = finish_with_calls(choice.finish_reason, piece.calls.size());
    } else {
      entry["text"] =
          echo ? tokenizer->decode(choice.prompt_ids, false) + choice.text : choice.text;
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
  // A completion's first chunk carries what echo and prompt_logprobs add.
  const bool first = !chat && !stream.started;
  if (!chat) stream.started = true;
  const Choice& whole = generation.choices().at(index);
  nlohmann::json choice = {
      {"index", index},
      {"logprobs",
       logprobs ? logprobs_json(output.new_logprobs, first && echo ? &whole : nullptr) : nullptr},
      {"finish_reason", finish_json(output.finish_reason)}};
  if (prompt_logprobs && (first || (chat && output.num_output_tokens == 1)))
    choice["prompt_logprobs"] = prompt_logprobs_json(whole);
  if (chat && (stream.reasoning || stream.tools)) {
    const size_t calls_before = stream.tools ? stream.tools->num_calls() : 0;
    const ChatPiece piece = stream.push(output.new_text, output.finished());
    // Bytes that may begin a tag, or a tool call's unfinished body, wait for a later chunk: this
    // one may carry no text at all.
    nlohmann::json delta = nlohmann::json::object();
    if (!piece.reasoning.empty()) delta["reasoning_content"] = piece.reasoning;
    if (!piece.content.empty()) delta["content"] = piece.content;
    if (!piece.calls.empty()) {
      delta["tool_calls"] = tool_calls_json(piece.calls, tool_call_id_prefix(generation, index),
                                            calls_before, /*with_index=*/true);
    }
    choice["delta"] = std::move(delta);
    if (stream.tools) {
      choice["finish_reason"] = finish_with_calls(output.finish_reason, stream.tools->num_calls());
    }
  } else if (chat) {
    choice["delta"] = output.new_text.empty() && output.finished()
                          ? nlohmann::json::object()
                          : nlohmann::json{{"content", output.new_text}};
  } else {
    choice["text"] = first && echo ? tokenizer->decode(whole.prompt_ids, false) + output.new_text
                                   : output.new_text;
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
