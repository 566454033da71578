// Structured output on xgrammar: the tokenizer's vocabulary as raw bytes, grammars compiled once
// per engine, and a matcher per request.
#include "engine/structured_output.h"

#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include <xgrammar/xgrammar.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/tokenizer/tokenizer.h"

namespace tidal {
namespace {

// Compact JSON (", " and ": " between items, no other whitespace): a model that may put any
// whitespace anywhere can spend its whole budget on it, and a cut-off object does not parse.
constexpr bool kAnyWhitespace = false;

// An EBNF string literal of `text`.
std::string ebnf_literal(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  return out + "\"";
}

// guided_choice's strings as a grammar: root ::= "a" | "b" | ...
std::string choice_grammar(const std::string& choices_json) {
  const nlohmann::json choices = nlohmann::json::parse(choices_json);
  TIDAL_CHECK(choices.is_array() && !choices.empty(), "choices must be a non-empty list");
  std::string grammar = "root ::= ";
  for (size_t i = 0; i < choices.size(); ++i) {
    TIDAL_CHECK(choices[i].is_string() && !choices[i].get_ref<const std::string&>().empty(),
                "choices must be non-empty strings");
    grammar += (i == 0 ? "" : " | ") + ebnf_literal(choices[i].get<std::string>());
  }
  return grammar;
}

// xgrammar's messages start with a timestamp and its source path: the part after "] " and the
// "Check failed: ... :" is what a user can act on.
std::string readable(const std::exception& error) {
  std::string message = error.what();
  if (const size_t bracket = message.find("] "); bracket != std::string::npos && bracket < 40) {
    message = message.substr(bracket + 2);
  }
  if (const size_t colon = message.rfind(": ");
      message.starts_with("/") && colon != std::string::npos) {
    message = message.substr(colon + 2);
  }
  return message;
}

class XgrammarState final : public GrammarState {
 public:
  XgrammarState(const xgrammar::CompiledGrammar& grammar, int32_t vocab_size)
      : matcher_(grammar),
        vocab_size_(vocab_size),
        mask_(static_cast<size_t>(xgrammar::GetBitmaskSize(vocab_size))) {}

  void allowed_ids(std::vector<int32_t>& ids) override {
    int64_t shape[1] = {static_cast<int64_t>(mask_.size())};
    DLTensor tensor{};
    tensor.data = mask_.data();
    tensor.device = DLDevice{kDLCPU, 0};
    tensor.ndim = 1;
    tensor.dtype = xgrammar::GetBitmaskDLType();
    tensor.shape = shape;
    matcher_.FillNextTokenBitmask(&tensor);
    for (int32_t id = 0; id < vocab_size_; ++id) {
      if ((static_cast<uint32_t>(mask_[static_cast<size_t>(id / 32)]) >> (id % 32)) & 1u) {
        ids.push_back(id);
      }
    }
  }

  bool accept(int32_t token) override { return matcher_.AcceptToken(token); }
  bool terminated() const override { return matcher_.IsTerminated(); }

 private:
  xgrammar::GrammarMatcher matcher_;
  int32_t vocab_size_;
  std::vector<int32_t> mask_;
};

}  // namespace

Status check_structured_output(const StructuredOutput& output) {
  try {
    switch (output.kind) {
      case StructuredOutput::Kind::kNone:
      case StructuredOutput::Kind::kJsonObject:
        break;
      case StructuredOutput::Kind::kJsonSchema:
        xgrammar::Grammar::FromJSONSchema(output.spec, kAnyWhitespace);
        break;
      case StructuredOutput::Kind::kRegex:
        xgrammar::Grammar::FromRegex(output.spec);
        break;
      case StructuredOutput::Kind::kChoice:
        xgrammar::Grammar::FromEBNF(choice_grammar(output.spec));
        break;
      case StructuredOutput::Kind::kGrammar:
        xgrammar::Grammar::FromEBNF(output.spec);
        break;
    }
  } catch (const std::exception& error) {
    return Status::invalid_argument(
        cat("'", output.field, "' does not compile to a grammar: ", readable(error)));
  }
  return Status::ok();
}

struct GrammarEngine::Impl {
  xgrammar::TokenizerInfo tokenizer_info;
  xgrammar::GrammarCompiler compiler;
  int32_t vocab_size;
  std::mutex mutex;  // the cache
  std::map<std::pair<StructuredOutput::Kind, std::string>, xgrammar::CompiledGrammar> compiled;

  Impl(xgrammar::TokenizerInfo info, int32_t vocab)
      : tokenizer_info(std::move(info)),
        compiler(tokenizer_info, /*max_threads=*/1),
        vocab_size(vocab) {}

  xgrammar::CompiledGrammar compile(const StructuredOutput& output) {
    std::lock_guard lock(mutex);
    const auto key = std::make_pair(output.kind, output.spec);
    if (const auto found = compiled.find(key); found != compiled.end()) return found->second;
    std::optional<xgrammar::CompiledGrammar> grammar;
    switch (output.kind) {
      case StructuredOutput::Kind::kJsonObject:
        grammar = compiler.CompileBuiltinJSONGrammar();
        break;
      case StructuredOutput::Kind::kJsonSchema:
        grammar = compiler.CompileJSONSchema(output.spec, kAnyWhitespace);
        break;
      case StructuredOutput::Kind::kRegex:
        grammar = compiler.CompileRegex(output.spec);
        break;
      case StructuredOutput::Kind::kChoice:
        grammar = compiler.CompileGrammar(choice_grammar(output.spec));
        break;
      case StructuredOutput::Kind::kGrammar:
        grammar = compiler.CompileGrammar(output.spec);
        break;
      case StructuredOutput::Kind::kNone:
        TIDAL_FAIL("no grammar to compile");
    }
    return compiled.emplace(key, *grammar).first->second;
  }
};

namespace {

// The vocabulary as xgrammar matches it: each id's bytes as the decoder makes them, special
// tokens (and ids the tokenizer lacks) empty, which xgrammar never allows.
xgrammar::TokenizerInfo tokenizer_info(const Tokenizer& tokenizer, int32_t vocab_size,
                                       std::vector<int32_t> stop_ids) {
  std::vector<std::string> vocab(static_cast<size_t>(std::min(vocab_size, tokenizer.vocab_size())));
  for (size_t id = 0; id < vocab.size(); ++id) {
    const auto token = static_cast<int32_t>(id);
    if (!tokenizer.is_special(token)) vocab[id] = std::string(tokenizer.token_bytes(token));
  }
  return xgrammar::TokenizerInfo(vocab, xgrammar::VocabType::RAW, vocab_size, std::move(stop_ids));
}

}  // namespace

GrammarEngine::GrammarEngine(const Tokenizer& tokenizer, int32_t vocab_size,
                             std::vector<int32_t> stop_ids)
    : impl_(std::make_unique<Impl>(tokenizer_info(tokenizer, vocab_size, std::move(stop_ids)),
                                   vocab_size)) {}

GrammarEngine::~GrammarEngine() = default;

std::unique_ptr<GrammarState> GrammarEngine::start(const StructuredOutput& output,
                                                   std::span<const int32_t> generated) {
  std::optional<xgrammar::CompiledGrammar> grammar;
  try {
    grammar = impl_->compile(output);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    TIDAL_FAIL("'", output.field, "' does not compile to a grammar: ", readable(error));
  }
  auto state = std::make_unique<XgrammarState>(*grammar, impl_->vocab_size);
  for (const int32_t token : generated) {
    TIDAL_CHECK(state->accept(token), "token ", token, " of the output breaks its grammar");
  }
  return state;
}

}  // namespace tidal
