// Frame-level vocabulary shared by the key-value store's server and client (see kv_store.h).
#pragma once

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

namespace tidal::kv_protocol {

inline constexpr std::string_view kSet = "set";
inline constexpr std::string_view kGet = "get";
inline constexpr std::string_view kWait = "wait";
inline constexpr std::string_view kDeletePrefix = "del";
inline constexpr std::string_view kCountPrefix = "count";
inline constexpr std::string_view kCancelPrefix = "cancel";

inline constexpr std::string_view kOk = "ok";
inline constexpr std::string_view kTimeout = "timeout";
inline constexpr std::string_view kError = "error";

inline std::string_view view(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

inline std::optional<int64_t> parse_int(std::string_view text) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Waits up to timeout (-1: forever) for the socket to be readable. A signal landing on this
// thread (EINTR, e.g. SIGCHLD from a rank spawner) counts as "not yet"; callers loop on their
// own deadline, so an interrupted wait never ends a request or the server.
inline bool poll_readable(zmq::socket_t& socket, std::chrono::milliseconds timeout) {
  zmq_pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
  try {
    zmq::poll(&item, 1, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
  return (item.revents & ZMQ_POLLIN) != 0;
}

}  // namespace tidal::kv_protocol
