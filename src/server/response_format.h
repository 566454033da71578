// ResponseFormat: the JSON of completion and chat responses, stream chunks, logprobs and usage.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/tokenizer/tokenizer.h"
#include "server/generation.h"
#include "server/reasoning_parser.h"
#include "server/tool_call_parser.h"

namespace tidal {

// What one piece of a chat answer becomes once thinking and tool calls are taken out.
struct ChatPiece {
  std::string reasoning;
  std::string content;
  std::vector<ToolCall> calls;
};

// A choice's state while it streams (and, run once over the whole text, for a whole answer).
struct ChoiceStream {
  bool started = false;                        // chat: the role chunk went out
  std::optional<ReasoningSplitter> reasoning;  // set when thinking is separated
  std::optional<ToolCallSplitter> tools;       // set when tool calls are parsed (after thinking)

  ChatPiece push(std::string_view text, bool at_end);
};

struct ResponseFormat {
  bool chat = false;
  std::string model;
  const Tokenizer* tokenizer = nullptr;
  bool return_token_ids = false;
  bool logprobs = false;
  // Chat with --reasoning-parser: whether the answers start inside the thinking block (see
  // reasoning_parser.h); nullopt: thinking stays in the content.
  std::optional<bool> reasoning_starts_in_thinking;
  // Chat with --tool-call-parser and tool_choice "auto": calls become tool_calls.
  bool parse_tool_calls = false;
  // Completions' echo: the text (and, with logprobs, the logprobs) start with the prompt's.
  bool echo = false;
  // vLLM's prompt_logprobs field on each choice.
  bool prompt_logprobs = false;

  std::vector<ChoiceStream> choice_streams(size_t num_choices) const;

  nlohmann::json full_response(const Generation& generation) const;
  // The chunks one update produces (chat sends the role first, once per choice).
  std::vector<nlohmann::json> stream_chunks(const Generation& generation,
                                            const Generation::Update& update,
                                            std::vector<ChoiceStream>& streams,
                                            bool include_usage) const;
  nlohmann::json usage_chunk(const Generation& generation) const;
  nlohmann::json usage(const Generation& generation) const;

 private:
  // `prompt` (with echo): the prompt's tokens first, the first with null logprobs.
  nlohmann::json logprobs_json(const std::vector<TokenLogprob>& entries,
                               const Choice* prompt = nullptr) const;
  nlohmann::json prompt_logprobs_json(const Choice& choice) const;
  std::string tool_call_id_prefix(const Generation& generation, size_t choice) const;
  nlohmann::json chunk_envelope(const Generation& generation, nlohmann::json choices) const;
};

}  // namespace tidal
