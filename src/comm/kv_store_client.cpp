// KvStoreClient: a DEALER socket with request ids, so a late reply never answers the wrong call.
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "comm/communicator.h"
#include "comm/kv_store.h"
#include "comm/kv_store_protocol.h"

namespace tidal {

namespace {

using Clock = std::chrono::steady_clock;
namespace proto = kv_protocol;

// How long past a blocking request's own timeout the client waits for the server to say
// "timeout" before it concludes the server itself is gone.
constexpr std::chrono::milliseconds kReplySlack{1000};

std::string describe_keys(const std::vector<std::string>& keys) {
  std::string text;
  for (size_t i = 0; i < keys.size() && i < 4; ++i) text += cat(i ? ", " : "", "'", keys[i], "'");
  if (keys.size() > 4) text += cat(", ... (", keys.size(), " keys)");
  return text;
}

}  // namespace

struct KvStoreClient::Impl {
  std::mutex mutex;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::dealer};
  uint64_t next_request_id = 1;

  // Sends one request and returns the reply frames after the request id: [status] [payload...].
  std::vector<zmq::message_t> request(const std::vector<std::string_view>& frames,
                                      Clock::time_point deadline, const std::string& what,
                                      const std::string& endpoint);
};

KvStoreClient::KvStoreClient(const KvStoreClientOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()) {
  try {
    impl_->socket.set(zmq::sockopt::linger, 0);
    // Requests queue until the connection is up, so a rank may start before the coordinator
    // listens; the reply deadline still bounds the whole call.
    impl_->socket.connect(options_.endpoint);
  } catch (const zmq::error_t& e) {
    throw CommError(cat("kv store: cannot connect to '", options_.endpoint, "': ", e.what()));
  }
}

KvStoreClient::~KvStoreClient() = default;

std::vector<zmq::message_t> KvStoreClient::Impl::request(
    const std::vector<std::string_view>& frames, Clock::time_point deadline,
    const std::string& what, const std::string& endpoint) {
  std::lock_guard lock(mutex);
  const uint64_t request_id = next_request_id++;
  char id_bytes[sizeof(request_id)];
  std::memcpy(id_bytes, &request_id, sizeof(request_id));
  const std::string_view id_frame(id_bytes, sizeof(id_bytes));

  std::vector<zmq::const_buffer> buffers{zmq::buffer(id_frame)};
  for (std::string_view frame : frames) buffers.push_back(zmq::buffer(frame));
  try {
    // DEALER queues while connecting; dontwait only fails at the high-water mark, i.e. when the
    // server has not been draining for a long time.
    if (!zmq::send_multipart(socket, buffers, zmq::send_flags::dontwait))
      throw CommError(cat("kv store ", endpoint, ": ", what, ": send queue full"));
    while (true) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      if (!proto::poll_readable(socket, left)) continue;
      std::vector<zmq::message_t> reply;
      if (!zmq::recv_multipart(socket, std::back_inserter(reply), zmq::recv_flags::dontwait))
        continue;
      // A reply to an earlier request this client gave up on: drop it and keep waiting.
      if (reply.size() < 2 || proto::view(reply[0]) != id_frame) continue;
      reply.erase(reply.begin());
      return reply;
    }
  } catch (const zmq::error_t& e) {
    throw CommError(cat("kv store ", endpoint, ": ", what, ": ", e.what()));
  }
  throw CommError(
      cat("kv store ", endpoint, ": no reply to ", what, " in time (is the coordinator alive?)"));
}

void KvStoreClient::set(std::string_view key, std::string_view value) {
  const std::string what = cat("set '", key, "'");
  auto reply = impl_->request({proto::kSet, key, value}, Clock::now() + options_.timeout, what,
                              options_.endpoint);
  if (proto::view(reply[0]) != proto::kOk) {
    throw CommError(cat("kv store ", options_.endpoint, ": ", what, " failed: ",
                        reply.size() > 1 ? proto::view(reply[1]) : proto::view(reply[0])));
  }
}

KvBytes KvStoreClient::get(std::string_view key) {
  return get(key, options_.timeout);
}

KvBytes KvStoreClient::get(std::string_view key, std::chrono::milliseconds timeout) {
  const std::string what = cat("get '", key, "'");
  const std::string timeout_text = std::to_string(timeout.count());
  auto reply = impl_->request({proto::kGet, timeout_text, key},
                              Clock::now() + timeout + kReplySlack, what, options_.endpoint);
  const std::string_view status = proto::view(reply[0]);
  if (status == proto::kOk && reply.size() == 2) return KvBytes(proto::view(reply[1]));
  if (status == proto::kTimeout) {
    throw CommError(cat("kv store ", options_.endpoint, ": ", what, " timed out after ",
                        timeout.count(), " ms"));
  }
  throw CommError(cat("kv store ", options_.endpoint, ": ", what,
                      " failed: ", reply.size() > 1 ? proto::view(reply[1]) : status));
}

std::optional<KvBytes> KvStoreClient::try_get(std::string_view key) {
  const std::string what = cat("try_get '", key, "'");
  auto reply = impl_->request({proto::kGet, "0", key}, Clock::now() + options_.timeout, what,
                              options_.endpoint);
  const std::string_view status = proto::view(reply[0]);
  if (status == proto::kOk && reply.size() == 2) return KvBytes(proto::view(reply[1]));
  if (status == proto::kTimeout) return std::nullopt;
  throw CommError(cat("kv store ", options_.endpoint, ": ", what,
                      " failed: ", reply.size() > 1 ? proto::view(reply[1]) : status));
}

void KvStoreClient::wait(const std::vector<std::string>& keys) {
  wait(keys, options_.timeout);
}

void KvStoreClient::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  const std::string what = cat("wait for ", describe_keys(keys));
  const std::string timeout_text = std::to_string(timeout.count());
  std::vector<std::string_view> frames{proto::kWait, timeout_text};
  for (const std::string& key : keys) frames.push_back(key);
  auto reply =
      impl_->request(frames, Clock::now() + timeout + kReplySlack, what, options_.endpoint);
  const std::string_view status = proto::view(reply[0]);
  if (status == proto::kOk) return;
  if (status == proto::kTimeout) {
    throw CommError(cat("kv store ", options_.endpoint, ": ", what, " timed out after ",
                        timeout.count(), " ms"));
  }
  throw CommError(cat("kv store ", options_.endpoint, ": ", what,
                      " failed: ", reply.size() > 1 ? proto::view(reply[1]) : status));
}

namespace {

size_t count_reply(const std::vector<zmq::message_t>& reply, const std::string& what,
                   const std::string& endpoint) {
  if (proto::view(reply[0]) == proto::kOk && reply.size() == 2) {
    if (auto count = proto::parse_int(proto::view(reply[1])); count && *count >= 0)
      return static_cast<size_t>(*count);
  }
  throw CommError(cat("kv store ", endpoint, ": ", what, " failed: ",
                      reply.size() > 1 ? proto::view(reply[1]) : proto::view(reply[0])));
}

}  // namespace

size_t KvStoreClient::delete_prefix(std::string_view prefix) {
  const std::string what = cat("delete_prefix '", prefix, "'");
  auto reply = impl_->request({proto::kDeletePrefix, prefix}, Clock::now() + options_.timeout, what,
                              options_.endpoint);
  return count_reply(reply, what, options_.endpoint);
}

size_t KvStoreClient::count_prefix(std::string_view prefix) {
  const std::string what = cat("count_prefix '", prefix, "'");
  auto reply = impl_->request({proto::kCountPrefix, prefix}, Clock::now() + options_.timeout, what,
                              options_.endpoint);
  return count_reply(reply, what, options_.endpoint);
}

size_t KvStoreClient::cancel_prefix(std::string_view prefix) {
  const std::string what = cat("cancel_prefix '", prefix, "'");
  auto reply = impl_->request({proto::kCancelPrefix, prefix}, Clock::now() + options_.timeout, what,
                              options_.endpoint);
  return count_reply(reply, what, options_.endpoint);
}

}  // namespace tidal
