// GlooCommunicator: tidal's Communicator on gloo::rendezvous::Context over TCP, with every Gloo
// failure turned into CommError and the group marked broken.
#include "comm/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <vector>

#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include "comm/gloo_store_adapter.h"
#include "common/logging.h"

namespace tidal {

namespace {

// Collectives run one at a time per communicator, so one tag serves them all. Point-to-point
// traffic gets its own slot so it can never match a collective's message.
constexpr uint32_t kCollectiveTag = 0;
constexpr uint8_t kPointToPointSlotPrefix = 0x7f;
constexpr uint32_t kPointToPointTag = 1;

template <typename T>
void reduce_sum(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(out);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

template <typename T>
void reduce_max(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(out);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = std::max(x[i], y[i]);
}

// Gloo's TCP transport writes to sockets without MSG_NOSIGNAL, so a write to a peer that just
// died raises SIGPIPE, whose default action kills this rank too. Ignore it (unless the process
// installed a handler of its own), so the write fails with EPIPE and becomes a CommError.
void ignore_sigpipe_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

class GlooCommunicator final : public Communicator {
 public:
  explicit GlooCommunicator(const GlooOptions& options);
  // Members go in reverse order: the connections close before their device's event loop stops.
  ~GlooCommunicator() override = default;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  uint64_t epoch() const override { return epoch_; }

  void all_reduce_sum(std::span<int64_t> values) override {
    all_reduce("all_reduce_sum(int64)", values.data(), values.size(), &reduce_sum<int64_t>);
  }
  void all_reduce_max(std::span<int64_t> values) override {
    all_reduce("all_reduce_max(int64)", values.data(), values.size(), &reduce_max<int64_t>);
  }
  void all_reduce_sum(std::span<float> values) override {
    all_reduce("all_reduce_sum(float)", values.data(), values.size(), &reduce_sum<float>);
  }

  void all_to_all_v(const void* send, std::span<const size_t> send_bytes, void* recv,
                    std::span<const size_t> recv_bytes) override;
  void send(int peer, const void* data, size_t bytes) override;
  void recv(int peer, void* data, size_t bytes) override;
  void barrier() override;

 private:
  using ReduceFn = void (*)(void*, const void*, const void*, size_t);
  template <typename T>
  void all_reduce(const char* op, T* values, size_t count, ReduceFn reduce);

  // Runs body, turning any failure into CommError(op, epoch, rank) and breaking the group.
  template <typename Body>
  void guarded(const char* op, Body&& body);

  int rank_;
  int size_;
  uint64_t epoch_;
  std::chrono::milliseconds timeout_;
  // Unbound buffers need a real address even for 0 bytes.
  char empty_byte_ = 0;
  std::optional<std::string> broken_;  // why the group is unusable, once it is

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
};

GlooCommunicator::GlooCommunicator(const GlooOptions& options)
    : rank_(options.rank), size_(options.size), epoch_(options.epoch), timeout_(options.timeout) {
  if (size_ < 1 || rank_ < 0 || rank_ >= size_) {
    throw CommError(cat("make_gloo_communicator: rank ", rank_, " of size ", size_,
                        " is out of range (epoch ", epoch_, ")"));
  }
  if (timeout_.count() <= 0) {
    throw CommError(
        cat("make_gloo_communicator: timeout must be positive, got ", timeout_.count(), " ms"));
  }
  ignore_sigpipe_once();
  std::optional<KvStoreClient> own_client;
  KvStoreClient* client = options.store;
  if (client == nullptr) {
    own_client.emplace(
        KvStoreClientOptions{.endpoint = options.store_endpoint, .timeout = options.timeout});
    client = &*own_client;
  }
  const std::string prefix =
      options.store_prefix.empty() ? gloo_store_prefix(epoch_) : options.store_prefix;
  GlooStoreAdapter store(*client, prefix, timeout_);

  try {
    gloo::transport::tcp::attr attr;
    if (options.interface.empty()) {
      attr.hostname = options.hostname;
    } else {
      attr.iface = options.interface;
    }
    device_ = gloo::transport::tcp::CreateDevice(attr);
    context_ = std::make_shared<gloo::rendezvous::Context>(rank_, size_);
    context_->setTimeout(timeout_);
    context_->connectFullMesh(store, device_);
  } catch (const std::exception& e) {
    // The store's CommError (a rank that never came), gloo::IoException (connect failed) and
    // gloo::EnforceNotMet all derive from std::exception.
    throw CommError(
        cat("rendezvous failed (", where(), ", store prefix '", prefix, "'): ", e.what()));
  }
}

template <typename Body>
void GlooCommunicator::guarded(const char* op, Body&& body) {
  if (broken_) {
    throw CommError(cat(op, " on a broken communicator (", where(), "); it broke on: ", *broken_));
  }
  std::string failure;
  try {
    body();
    return;
  } catch (const std::exception& e) {
    // gloo::IoException (peer gone, timed out), gloo::EnforceNotMet (bad arguments), and our
    // own CommError checks.
    failure = e.what();
  }
  const std::string message = cat(op, " failed (", where(), "): ", failure);
  broken_ = message;
  // Closing our connections makes peers still blocked on us fail now rather than at their
  // timeout, so one lost rank brings the whole group down quickly and uniformly.
  try {
    context_->closeConnections();
  } catch (const std::exception& e) {
    log_debug("closing connections of a broken communicator (", where(), "): ", e.what());
  }
  throw CommError(message);
}

template <typename T>
void GlooCommunicator::all_reduce(const char* op, T* values, size_t count, ReduceFn reduce) {
  guarded(op, [&] {
    // Every rank passes the same count, so all skip together; a lone rank skips too.
    if (count == 0 || size_ == 1) return;
    gloo::AllreduceOptions options(context_);
    options.setOutput(values, count);
    options.setReduceFunction(reduce);
    options.setTag(kCollectiveTag);
    options.setTimeout(timeout_);
    gloo::allreduce(options);
  });
}

void GlooCommunicator::all_to_all_v(const void* send, std::span<const size_t> send_bytes,
                                    void* recv, std::span<const size_t> recv_bytes) {
  guarded("all_to_all_v", [&] {
    const auto num_ranks = static_cast<size_t>(size_);
    if (send_bytes.size() != num_ranks || recv_bytes.size() != num_ranks) {
      throw CommError(cat("expected ", num_ranks, " counts per side, got ", send_bytes.size(),
                          " to send and ", recv_bytes.size(), " to receive"));
    }
    const size_t send_total = std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0});
    const size_t recv_total = std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0});
    if ((send == nullptr && send_total > 0) || (recv == nullptr && recv_total > 0))
      throw CommError("null buffer with a non-zero byte count");

    std::vector<int64_t> send_counts(send_bytes.begin(), send_bytes.end());
    std::vector<int64_t> recv_counts(recv_bytes.begin(), recv_bytes.end());
    gloo::AlltoallvOptions options(context_);
    // Gloo takes a mutable input pointer but only reads from it.
    options.setInput(send_total > 0 ? static_cast<char*>(const_cast<void*>(send)) : &empty_byte_,
                     std::move(send_counts));
    options.setOutput(recv_total > 0 ? static_cast<char*>(recv) : &empty_byte_,
                      std::move(recv_counts));
    options.setTag(kCollectiveTag);
    options.setTimeout(timeout_);
    gloo::alltoallv(options);
  });
}

void GlooCommunicator::send(int peer, const void* data, size_t bytes) {
  check_peer("send", peer);
  guarded("send", [&] {
    void* ptr = bytes > 0 ? const_cast<void*>(data) : &empty_byte_;
    auto buffer = context_->createUnboundBuffer(ptr, bytes);
    buffer->send(peer, gloo::Slot::build(kPointToPointSlotPrefix, kPointToPointTag));
    if (!buffer->waitSend(timeout_)) throw CommError(cat("send to rank ", peer, " was aborted"));
  });
}

void GlooCommunicator::recv(int peer, void* data, size_t bytes) {
  check_peer("recv", peer);
  guarded("recv", [&] {
    void* ptr = bytes > 0 ? data : &empty_byte_;
    auto buffer = context_->createUnboundBuffer(ptr, bytes);
    buffer->recv(peer, gloo::Slot::build(kPointToPointSlotPrefix, kPointToPointTag));
    if (!buffer->waitRecv(timeout_)) throw CommError(cat("recv from rank ", peer, " was aborted"));
  });
}

void GlooCommunicator::barrier() {
  guarded("barrier", [&] {
    if (size_ == 1) return;
    gloo::BarrierOptions options(context_);
    options.setTag(kCollectiveTag);
    options.setTimeout(timeout_);
    gloo::barrier(options);
  });
}

}  // namespace

std::string gloo_store_prefix(uint64_t epoch) {
  return cat("gloo/", epoch, "/");
}

std::unique_ptr<Communicator> make_gloo_communicator(const GlooOptions& options) {
  return std::make_unique<GlooCommunicator>(options);
}

}  // namespace tidal
