// IncrementalDetokenizer: streams decode() output, holding back only an unfinished UTF-8 character.
//
// Every supported decoder maps each token to bytes on its own and repairs UTF-8 over the whole
// byte string; that repair decides each character from its own bytes alone, so everything before
// an unfinished trailing sequence is already final. Each push therefore costs O(its token's bytes).
#include "model/tokenizer/tokenizer.h"

#include "model/tokenizer/tokenizer_impl.h"
#include "model/tokenizer/utf8.h"

namespace tidal {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  const Tokenizer::Impl& impl = *tokenizer_->impl_;
  if (!impl.keeps(id, skip_special_tokens_)) return {};
  if (any_token_) pending_ += impl.decoder.separator();
  pending_ += impl.decoded(id);
  any_token_ = true;
  std::string text;
  const size_t consumed = tok::append_lossy_utf8(pending_, true, text);
  pending_.erase(0, consumed);
  return text;
}

std::string IncrementalDetokenizer::flush() {
  std::string text = tok::lossy_utf8(pending_);
  pending_.clear();
  return text;
}

}  // namespace tidal
