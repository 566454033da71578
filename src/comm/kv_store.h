// Rendezvous key-value store over ZeroMQ: the coordinator serves it, ranks use it to form
// communicators (Gloo addresses, NCCL unique ids).
//
// Wire protocol (multipart ZeroMQ frames; values travel as raw frames, so any bytes are fine):
//   request  (DEALER -> ROUTER): [request id: 8 bytes LE] [op] [args...]
//     "set"   key value
//     "get"   timeout_ms key          (waits up to timeout_ms for the key; 0 = do not wait)
//     "wait"  timeout_ms key...       (waits up to timeout_ms for all keys)
//     "del"   prefix                  (deletes every key that starts with prefix)
//     "count" prefix                  (number of keys that start with prefix)
//   reply    (ROUTER -> DEALER): [request id] [status] [payload...]
//     status "ok" (get: value; del/count: decimal count), "timeout", or "error" message.
// Integers other than the request id are decimal text. The request id lets a client drop a late
// reply to a request it already gave up on, so one socket stays usable after a timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tidal {

// Values are arbitrary bytes held in std::string (embedded zeros are fine).
using KvBytes = std::string;

struct KvStoreServerOptions {
  // ZeroMQ endpoint to bind; "*" as the port picks a free one (see endpoint()).
  std::string bind_address = "tcp://127.0.0.1:*";
};

// Serves the store from its own thread. Blocking requests (get, wait) are parked and answered
// when their keys arrive or their deadline passes, so one slow waiter never stalls the others.
class KvStoreServer {
 public:
  explicit KvStoreServer(const KvStoreServerOptions& options = {});
  ~KvStoreServer();  // stops the thread and closes the socket (linger 0); never throws
  KvStoreServer(const KvStoreServer&) = delete;
  KvStoreServer& operator=(const KvStoreServer&) = delete;

  // The bound endpoint with the real port, e.g. "tcp://127.0.0.1:40123", for clients to connect.
  const std::string& endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct KvStoreClientOptions {
  std::string endpoint{};  // the server's endpoint()
  // Default wait for get/wait, and the limit on any reply: a dead server throws CommError
  // after this long instead of hanging.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

// One rank's connection to the store. Every failure (timeout, server gone, malformed reply)
// throws CommError. Safe to share between threads, but calls are serialised: a blocking get or
// wait holds the client until it returns, so a thread that must not wait behind a rendezvous
// uses a client of its own.
class KvStoreClient {
 public:
  explicit KvStoreClient(const KvStoreClientOptions& options);
  ~KvStoreClient();
  KvStoreClient(const KvStoreClient&) = delete;
  KvStoreClient& operator=(const KvStoreClient&) = delete;

  void set(std::string_view key, std::string_view value);
  // Waits up to the timeout for the key to exist, then returns its value.
  KvBytes get(std::string_view key);
  KvBytes get(std::string_view key, std::chrono::milliseconds timeout);
  // Returns the value if the key exists now, without waiting.
  std::optional<KvBytes> try_get(std::string_view key);
  // Waits until every key exists.
  void wait(const std::vector<std::string>& keys);
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  // Deletes every key starting with prefix (e.g. an old epoch's "gloo/3/"); returns how many.
  size_t delete_prefix(std::string_view prefix);
  // Number of keys starting with prefix ("" counts all).
  size_t count_prefix(std::string_view prefix);
  // Abandons every rendezvous under prefix: its keys are deleted, and every set, get or wait under
  // it, pending or later, fails at once (CommError "cancelled"). Returns how many waits it
  // released. The server remembers each prefix (one per rolled-back transition) for good.
  size_t cancel_prefix(std::string_view prefix);

  std::chrono::milliseconds timeout() const { return options_.timeout; }
  const std::string& endpoint() const { return options_.endpoint; }

 private:
  struct Impl;
  KvStoreClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidal
