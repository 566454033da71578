// OutputQueue: a thread-safe queue of RequestOutputs from the engine to one API call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "engine/request_output.h"

namespace tidal {

// Outputs of one or more requests (the n choices of one API call share a queue).
class OutputQueue {
 public:
  // The next output, or nullopt after `timeout` without one.
  std::optional<RequestOutput> pop(std::chrono::milliseconds timeout);
  // The next output if one is there; never waits (an event-driven reader's pop).
  std::optional<RequestOutput> try_pop();
  void push(RequestOutput output);
  // Called on the pushing thread after every push, until replaced: how an event-driven reader
  // learns there is something to pop. It must only schedule work, never pop or block. Replacing
  // it (with nullptr to stop) waits for a call in progress, so the old one is never called after.
  void set_listener(std::function<void()> listener);

 private:
  std::mutex listener_mutex_;
  std::function<void()> listener_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestOutput> outputs_;
};

}  // namespace tidal
