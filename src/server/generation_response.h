// GenerationResponse: a Generation's reply produced as its outputs arrive, for the event-driven
// HTTP layer: an SSE stream (one write of every chunk ready at once) or, when not streaming, the
// whole body once the last choice ends. The client's hang-up cancels the generation.
#pragma once

#include <functional>
#include <memory>

#include "server/generation.h"
#include "server/http/http_server.h"
#include "server/response_format.h"

namespace tidal {

class GenerationResponse final : public ResponseProducer {
 public:
  // `on_end` runs once when the response is complete or cancelled (admission accounting).
  GenerationResponse(std::unique_ptr<Generation> generation, ResponseFormat format, bool stream,
                     bool include_usage, std::function<void()> on_end);
  ~GenerationResponse() override;

  void attach(std::function<void()> wakeup) override;
  Produced produce() override;
  void cancel() override;

 private:
  void end();
  void drain_stream(std::string& chunk);

  std::unique_ptr<Generation> generation_;
  ResponseFormat format_;
  bool stream_;
  bool include_usage_;
  std::function<void()> on_end_;
  bool head_sent_ = false;
  std::vector<ChoiceStream> streams_;
};

}  // namespace tidal
