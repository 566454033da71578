// OutputQueue: a thread-safe queue of RequestOutputs from the engine to one API call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "engine/request_output.h"

namespace tidal {

// Outputs of one or more requests (the n choices of one API call share a queue).
class OutputQueue {
 public:
  // The next output, or nullopt after `timeout` without one.
  std::optional<RequestOutput> pop(std::chrono::milliseconds timeout);
  void push(RequestOutput output);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestOutput> outputs_;
};

}  // namespace tidal
