// GenerationResponse: folding outputs into SSE chunks or the whole body.
#include "server/generation_response.h"

#include "common/error.h"
#include "common/logging.h"
#include "server/http_json.h"

namespace tidal {
namespace {

std::string sse_event(const std::string& data) {
  return "data: " + data + "\n\n";
}

std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json stream_error(const std::string& message) {
  return {{"error",
           {{"message", message}, {"type", "server_error"}, {"param", nullptr}, {"code", 503}}}};
}

}  // namespace

GenerationResponse::GenerationResponse(std::unique_ptr<Generation> generation,
                                       ResponseFormat format, bool stream, bool include_usage,
                                       std::function<void()> on_end)
    : generation_(std::move(generation)),
      format_(std::move(format)),
      stream_(stream),
      include_usage_(include_usage),
      on_end_(std::move(on_end)),
      streams_(format_.choice_streams(generation_->choices().size())) {}

GenerationResponse::~GenerationResponse() {
  // Unhook first: the generation's abort below must not wake a connection that is gone.
  generation_->set_listener(nullptr);
  generation_->abort();
  end();
}

void GenerationResponse::attach(std::function<void()> wakeup) {
  generation_->set_listener(std::move(wakeup));
}

void GenerationResponse::end() {
  if (on_end_) {
    std::function<void()> on_end = std::move(on_end_);
    on_end_ = nullptr;
    on_end();
  }
}

void GenerationResponse::drain_stream(std::string& chunk) {
  while (std::optional<Generation::Update> update = generation_->next()) {
    if (!stream_) continue;
    for (const nlohmann::json& event :
         format_.stream_chunks(*generation_, *update, streams_, include_usage_)) {
      chunk += sse_event(dump(event));
    }
  }
}

ResponseProducer::Produced GenerationResponse::produce() {
  Produced produced;
  if (stream_ && !head_sent_) {
    produced.head = HttpResponse{.status = 200,
                                 .content_type = "text/event-stream",
                                 .body = {},
                                 .headers = {{"Cache-Control", "no-cache"}}};
    head_sent_ = true;
  }
  try {
    drain_stream(produced.chunk);
  } catch (const std::exception& error) {
    // An exception ends this response, never the server: the stream says why before [DONE].
    log_line(LogLevel::kError, cat("generation ", generation_->id(), " failed: ", error.what()));
    generation_->abort();
    end();
    if (!stream_) {
      produced.whole = error_response({.status = 500,
                                       .type = "server_error",
                                       .message = error.what(),
                                       .param = "",
                                       .code = "internal_error"});
      return produced;
    }
    produced.chunk += sse_event(dump(stream_error(error.what())));
    produced.chunk += sse_event("[DONE]");
    produced.done = true;
    return produced;
  }
  if (!generation_->finished()) return produced;
  end();
  if (!stream_) {
    if (!generation_->server_error().empty()) {
      // Never a truncated 200: the client learns the request failed, and why.
      produced.whole = error_response({.status = 503,
                                       .type = "server_error",
                                       .message = generation_->server_error(),
                                       .param = "",
                                       .code = "unavailable"});
    } else {
      produced.whole = json_response(200, format_.full_response(*generation_));
    }
    return produced;
  }
  if (!generation_->server_error().empty()) {
    // The stream did not end normally: say so before [DONE] (no finish_reason came).
    produced.chunk += sse_event(dump(stream_error(generation_->server_error())));
  }
  if (include_usage_) produced.chunk += sse_event(dump(format_.usage_chunk(*generation_)));
  produced.chunk += sse_event("[DONE]");
  produced.done = true;
  return produced;
}

void GenerationResponse::cancel() {
  generation_->set_listener(nullptr);
  generation_->abort();  // the client is gone: free its slots and KV blocks now
  end();
}

}  // namespace tidal
