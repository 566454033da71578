// ResponseFormat: the JSON of completion and chat responses, stream chunks, logprobs and usage.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/tokenizer/tokenizer.h"
#include "server/generation.h"

namespace tidal {

struct ResponseFormat {
  bool chat = false;
  std::string model;
  const Tokenizer* tokenizer = nullptr;
  bool return_token_ids = false;
  bool logprobs = false;

  nlohmann::json full_response(const Generation& generation) const;
  // The chunks one update produces (chat sends the role first, once per choice).
  std::vector<nlohmann::json> stream_chunks(const Generation& generation,
                                            const Generation::Update& update,
                                            std::vector<bool>& started_choices,
                                            bool include_usage) const;
  nlohmann::json usage_chunk(const Generation& generation) const;
  nlohmann::json usage(const Generation& generation) const;

 private:
  nlohmann::json logprobs_json(const std::vector<TokenLogprob>& entries) const;
  nlohmann::json chunk_envelope(const Generation& generation, nlohmann::json choices) const;
};

}  // namespace tidal
