// Status and Result<T>: recoverable outcomes as values, so callers decide (no exceptions across
// APIs).
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "common/error.h"

namespace tidal {

enum class StatusCode {
  kOk,
  kInvalidArgument,  // the caller's input is wrong (maps to HTTP 400)
  kNotFound,
  kOutOfMemory,  // KV cache or workspace full
  kUnavailable,  // a peer or a rank is gone
  kTimeout,
  kConflict,  // the operation clashes with one already running (maps to HTTP 409)
  kInternal,
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return {}; }
  static Status invalid_argument(std::string message) {
    return {StatusCode::kInvalidArgument, std::move(message)};
  }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {
    TIDAL_CHECK(!std::get<Status>(value_).is_ok(),
                "a Result built from a Status must hold an error");
  }

  bool is_ok() const { return std::holds_alternative<T>(value_); }
  const Status& status() const { return std::get<Status>(value_); }
  T& value() {
    TIDAL_CHECK(is_ok(), "value() of a failed Result: ", status().message());
    return std::get<T>(value_);
  }
  const T& value() const {
    TIDAL_CHECK(is_ok(), "value() of a failed Result: ", status().message());
    return std::get<T>(value_);
  }

 private:
  std::variant<T, Status> value_;
};

}  // namespace tidal
