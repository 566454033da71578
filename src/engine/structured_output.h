// Structured output: a request's grammar (JSON schema, any JSON object, regex, choice, EBNF)
// compiled against the tokenizer by xgrammar, and the state that says, token by token, which
// ids may come next. The CPU backend's sampler draws only from those (SamplingRow's allowed ids).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/sampling_params.h"

namespace tidal {

class Tokenizer;

// Checks that the grammar parses (a schema, a regex, EBNF, a list of choices), without a
// tokenizer: the front's 400 names the request field and what is wrong.
Status check_structured_output(const StructuredOutput& output);

// One request's place in its grammar.
class GrammarState {
 public:
  virtual ~GrammarState() = default;
  // Appends the ids that may come next to `ids` (a stop id once the grammar is complete).
  virtual void allowed_ids(std::vector<int32_t>& ids) = 0;
  // Advances past `token`; false when the grammar does not allow it (the state is unchanged).
  virtual bool accept(int32_t token) = 0;
  // Whether the grammar is complete and its stop id accepted: nothing may follow.
  virtual bool terminated() const = 0;
};

// The grammars of one engine: the tokenizer's vocabulary as xgrammar sees it, and a cache of
// compiled grammars (the same schema compiles once).
class GrammarEngine {
 public:
  // `vocab_size` the model's (logits') width; `stop_ids` what ends an output (EOS).
  GrammarEngine(const Tokenizer& tokenizer, int32_t vocab_size, std::vector<int32_t> stop_ids);
  ~GrammarEngine();
  GrammarEngine(const GrammarEngine&) = delete;
  GrammarEngine& operator=(const GrammarEngine&) = delete;

  // A state at the start of `output`'s grammar, advanced past `generated` (a request handed over
  // from another rank). Throws tidal::Error for a grammar that does not compile or a token it
  // does not allow.
  std::unique_ptr<GrammarState> start(const StructuredOutput& output,
                                      std::span<const int32_t> generated);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidal
