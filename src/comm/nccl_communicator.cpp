// NcclCommunicator: tidal's Communicator on one ncclComm_t (non-blocking mode, so every wait is
// bounded), with every NCCL or CUDA failure turned into CommError and the group marked broken.
#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "common/logging.h"

namespace tidal {

namespace {

using Clock = std::chrono::steady_clock;

// A failure inside an operation; guarded() adds the operation, epoch and rank.
struct NcclFailure {
  std::string message;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const NcclOptions& options);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  uint64_t epoch() const override { return epoch_; }

  void all_reduce_sum(std::span<int64_t> values) override {
    all_reduce("all_reduce_sum(int64)", values.data(), values.size_bytes(), values.size(),
               ncclInt64, ncclSum);
  }
  void all_reduce_max(std::span<int64_t> values) override {
    all_reduce("all_reduce_max(int64)", values.data(), values.size_bytes(), values.size(),
               ncclInt64, ncclMax);
  }
  void all_reduce_sum(std::span<float> values) override {
    all_reduce("all_reduce_sum(float)", values.data(), values.size_bytes(), values.size(),
               ncclFloat32, ncclSum);
  }

  void all_to_all_v(const void* send, std::span<const size_t> send_bytes, void* recv,
                    std::span<const size_t> recv_bytes) override;
  void send(int peer, const void* data, size_t bytes) override;
  void recv(int peer, void* data, size_t bytes) override;
  void barrier() override;

 private:
  void all_reduce(const char* op, void* values, size_t bytes, size_t count, ncclDataType_t type,
                  ncclRedOp_t reduce);
  template <typename Body>
  void guarded(const char* op, Body&& body);

  // Throws NcclFailure for a failed NCCL call (with the communicator's last error).
  void check(ncclResult_t result, const char* call) const;
  void check_cuda(cudaError_t result, const char* call) const;
  // Waits until the communicator has no operation in progress (non-blocking mode), bounded by
  // the timeout; throws NcclFailure on an asynchronous error or on timeout.
  void wait_comm(const char* what) const;
  // Waits for the stream, polling NCCL's asynchronous error; bounded by the timeout.
  void wait_stream() const;
  // Throws NcclFailure when the front has reported this communicator's epoch lost.
  void check_lost() const;
  // True when `ptr` is host memory (pageable or pinned) that NCCL cannot read directly.
  bool is_host(const void* ptr) const;
  // A device buffer of at least `bytes` of this communicator's own, for host-staged operations.
  void* staging(size_t bytes);

  int rank_;
  int size_;
  uint64_t epoch_;
  int device_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
  const std::atomic<uint64_t>* lost_epoch_;
  ncclComm_t comm_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  std::optional<std::string> broken_;  // why the group is unusable, once it is
};

std::string nccl_id_bytes(const ncclUniqueId& id) {
  return std::string(id.internal, sizeof(id.internal));
}

NcclCommunicator::NcclCommunicator(const NcclOptions& options)
    : rank_(options.rank),
      size_(options.size),
      epoch_(options.epoch),
      device_(options.device),
      stream_(options.stream),
      timeout_(options.timeout),
      lost_epoch_(options.lost_epoch) {
  if (size_ < 1 || rank_ < 0 || rank_ >= size_) {
    throw CommError(cat("make_nccl_communicator: rank ", rank_, " of size ", size_,
                        " is out of range (epoch ", epoch_, ")"));
  }
  if (timeout_.count() <= 0) {
    throw CommError(
        cat("make_nccl_communicator: timeout must be positive, got ", timeout_.count(), " ms"));
  }
  if (options.store == nullptr) {
    throw CommError(cat("make_nccl_communicator (", where(), "): no rendezvous store"));
  }
  const std::string key = options.store_key.empty() ? nccl_store_key(epoch_) : options.store_key;
  try {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      options.store->set(key, nccl_id_bytes(id));
    } else {
      const KvBytes bytes = options.store->get(key, timeout_);
      if (bytes.size() != sizeof(id.internal)) {
        throw NcclFailure{cat("the unique id under '", key, "' has ", bytes.size(),
                              " bytes, expected ", sizeof(id.internal))};
      }
      std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every wait below is ours, and bounded
    const ncclResult_t init = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
    if (init != ncclSuccess && init != ncclInProgress) check(init, "ncclCommInitRankConfig");
    wait_comm("ncclCommInitRankConfig");
  } catch (const NcclFailure& failure) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    throw CommError(cat("NCCL rendezvous failed (", where(), ", device cuda:", device_,
                        ", store key '", key, "'): ", failure.message));
  } catch (const std::exception& e) {  // the store's CommError: rank 0 never published the id
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    throw CommError(
        cat("NCCL rendezvous failed (", where(), ", store key '", key, "'): ", e.what()));
  }
}

NcclCommunicator::~NcclCommunicator() {
  // Never throws; errors are only logged. A broken group is aborted (its peers may be gone, so a
  // graceful finalize could wait for them); a healthy one is finalized, then destroyed.
  cudaSetDevice(device_);
  if (comm_ != nullptr) {
    bool aborted = false;
    if (broken_) {
      ncclCommAbort(comm_);
      aborted = true;
    } else {
      ncclResult_t result = ncclCommFinalize(comm_);
      const auto deadline = Clock::now() + timeout_;
      ncclResult_t state = result;
      while (result == ncclSuccess || result == ncclInProgress) {
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || state != ncclInProgress) break;
        if (Clock::now() > deadline) break;
        std::this_thread::yield();
      }
      if ((result != ncclSuccess && result != ncclInProgress) || state != ncclSuccess) {
        log_debug("finalizing the NCCL communicator (", where(),
                  ") failed: ", ncclGetErrorString(state != ncclSuccess ? state : result),
                  "; aborting it");
        ncclCommAbort(comm_);
        aborted = true;
      }
    }
    if (!aborted) ncclCommDestroy(comm_);
    comm_ = nullptr;
  }
  if (staging_ != nullptr) cudaFree(staging_);
}

void NcclCommunicator::check(ncclResult_t result, const char* call) const {
  if (result == ncclSuccess || result == ncclInProgress) return;
  std::string detail = ncclGetErrorString(result);
  if (comm_ != nullptr) {
    const char* last = ncclGetLastError(comm_);
    if (last != nullptr && last[0] != '\0') detail = cat(detail, " (", last, ")");
  }
  throw NcclFailure{cat(call, ": ", detail)};
}

void NcclCommunicator::check_cuda(cudaError_t result, const char* call) const {
  if (result != cudaSuccess) throw NcclFailure{cat(call, ": ", cudaGetErrorString(result))};
}

void NcclCommunicator::wait_comm(const char* what) const {
  const auto deadline = Clock::now() + timeout_;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError");
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) check(state, what);
    check_lost();
    if (Clock::now() > deadline) {
      throw NcclFailure{cat(what, " did not complete within ", timeout_.count(), " ms")};
    }
    std::this_thread::yield();
  }
}

void NcclCommunicator::check_lost() const {
  if (lost_epoch_ != nullptr && lost_epoch_->load(std::memory_order_relaxed) >= epoch_) {
    throw NcclFailure{
        cat("the front reports epoch ", lost_epoch_->load(), " lost (a rank of the group failed)")};
  }
}

void NcclCommunicator::wait_stream() const {
  const auto deadline = Clock::now() + timeout_;
  for (;;) {
    const cudaError_t query = cudaStreamQuery(stream_);
    if (query == cudaSuccess) return;
    if (query != cudaErrorNotReady) check_cuda(query, "cudaStreamQuery");
    ncclResult_t state = ncclSuccess;
    check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError");
    if (state != ncclSuccess && state != ncclInProgress) check(state, "the NCCL kernel");
    check_lost();
    if (Clock::now() > deadline) {
      throw NcclFailure{
          cat("the stream did not drain within ", timeout_.count(), " ms (a peer is gone?)")};
    }
    std::this_thread::yield();
  }
}

bool NcclCommunicator::is_host(const void* ptr) const {
  cudaPointerAttributes attributes{};
  const cudaError_t result = cudaPointerGetAttributes(&attributes, ptr);
  if (result != cudaSuccess) {
    cudaGetLastError();  // older runtimes report plain host memory as an error; clear it
    return true;
  }
  return attributes.type == cudaMemoryTypeUnregistered || attributes.type == cudaMemoryTypeHost;
}

void* NcclCommunicator::staging(size_t bytes) {
  bytes = std::max<size_t>(bytes, 256);
  if (bytes <= staging_bytes_) return staging_;
  // Staged operations wait for the stream before returning, so the old buffer is idle.
  if (staging_ != nullptr) check_cuda(cudaFree(staging_), "cudaFree(staging)");
  staging_ = nullptr;
  staging_bytes_ = 0;
  const size_t rounded = std::max<size_t>(bytes, 4096);
  check_cuda(cudaMalloc(&staging_, rounded), "cudaMalloc(staging)");
  staging_bytes_ = rounded;
  return staging_;
}

template <typename Body>
void NcclCommunicator::guarded(const char* op, Body&& body) {
  if (broken_) {
    throw CommError(cat(op, " on a broken communicator (", where(), "); it broke on: ", *broken_));
  }
  std::string failure;
  try {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    body();
    return;
  } catch (const NcclFailure& f) {
    failure = f.message;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  const std::string message = cat(op, " failed (", where(), "): ", failure);
  broken_ = message;
  // Aborting makes our queued NCCL kernels return, and peers still waiting on us fail instead
  // of hanging to their own timeout.
  ncclCommAbort(comm_);
  comm_ = nullptr;
  throw CommError(message);
}

void NcclCommunicator::all_reduce(const char* op, void* values, size_t bytes, size_t count,
                                  ncclDataType_t type, ncclRedOp_t reduce) {
  guarded(op, [&] {
    if (count == 0 || size_ == 1) return;
    const bool host = is_host(values);
    void* buffer = host ? staging(bytes) : values;
    if (host) {
      check_cuda(cudaMemcpyAsync(buffer, values, bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync(host to device)");
    }
    check(ncclAllReduce(buffer, buffer, count, type, reduce, comm_, stream_), "ncclAllReduce");
    wait_comm("ncclAllReduce");
    if (host) {
      check_cuda(cudaMemcpyAsync(values, buffer, bytes, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(device to host)");
    }
    wait_stream();
  });
}

void NcclCommunicator::all_to_all_v(const void* send, std::span<const size_t> send_bytes,
                                    void* recv, std::span<const size_t> recv_bytes) {
  guarded("all_to_all_v", [&] {
    const auto num_ranks = static_cast<size_t>(size_);
    if (send_bytes.size() != num_ranks || recv_bytes.size() != num_ranks) {
      throw NcclFailure{cat("expected ", num_ranks, " counts per side, got ", send_bytes.size(),
                            " to send and ", recv_bytes.size(), " to receive")};
    }
    const size_t send_total = std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0});
    const size_t recv_total = std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0});
    if ((send == nullptr && send_total > 0) || (recv == nullptr && recv_total > 0)) {
      throw NcclFailure{"null buffer with a non-zero byte count"};
    }
    // Host buffers (the dispatch counts) are staged: send first, then recv, 256-byte aligned.
    const bool host_send = send_total > 0 && is_host(send);
    const bool host_recv = recv_total > 0 && is_host(recv);
    const size_t send_offset = 0;
    const size_t recv_offset = host_send ? (send_total + 255) / 256 * 256 : 0;
    const char* device_send = static_cast<const char*>(send);
    char* device_recv = static_cast<char*>(recv);
    if (host_send || host_recv) {
      char* base = static_cast<char*>(staging(recv_offset + (host_recv ? recv_total : 0)));
      if (host_send) {
        device_send = base + send_offset;
        check_cuda(
            cudaMemcpyAsync(base + send_offset, send, send_total, cudaMemcpyHostToDevice, stream_),
            "cudaMemcpyAsync(host to device)");
      }
      if (host_recv) device_recv = base + recv_offset;
    }
    check(ncclGroupStart(), "ncclGroupStart");
    size_t send_at = 0;
    size_t recv_at = 0;
    for (size_t r = 0; r < num_ranks; ++r) {
      const int peer = static_cast<int>(r);
      if (send_bytes[r] > 0) {
        check(ncclSend(device_send + send_at, send_bytes[r], ncclUint8, peer, comm_, stream_),
              "ncclSend");
      }
      if (recv_bytes[r] > 0) {
        check(ncclRecv(device_recv + recv_at, recv_bytes[r], ncclUint8, peer, comm_, stream_),
              "ncclRecv");
      }
      send_at += send_bytes[r];
      recv_at += recv_bytes[r];
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    wait_comm("all_to_all_v");
    if (host_recv) {
      check_cuda(cudaMemcpyAsync(recv, device_recv, recv_total, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(device to host)");
    }
    // Device-only exchanges stay queued on the stream (their consumers are queued behind them);
    // a staged one must finish before the host reads its result or reuses the staging buffer.
    if (host_send || host_recv) wait_stream();
  });
}

void NcclCommunicator::send(int peer, const void* data, size_t bytes) {
  check_peer("send", peer);
  guarded("send", [&] {
    if (bytes == 0) return;  // both sides agree on 0 and skip together
    const void* device_data = data;
    if (is_host(data)) {
      device_data = staging(bytes);
      check_cuda(cudaMemcpyAsync(const_cast<void*>(device_data), data, bytes,
                                 cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync(host to device)");
    }
    check(ncclSend(device_data, bytes, ncclUint8, peer, comm_, stream_), "ncclSend");
    wait_comm("ncclSend");
    wait_stream();  // the Communicator contract: send returns once the peer has the bytes
  });
}

void NcclCommunicator::recv(int peer, void* data, size_t bytes) {
  check_peer("recv", peer);
  guarded("recv", [&] {
    if (bytes == 0) return;
    const bool host = is_host(data);
    void* device_data = host ? staging(bytes) : data;
    check(ncclRecv(device_data, bytes, ncclUint8, peer, comm_, stream_), "ncclRecv");
    wait_comm("ncclRecv");
    if (host) {
      check_cuda(cudaMemcpyAsync(data, device_data, bytes, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(device to host)");
    }
    wait_stream();
  });
}

void NcclCommunicator::barrier() {
  guarded("barrier", [&] {
    if (size_ == 1) return;
    // A one-element all-reduce on the staging buffer, waited for.
    void* one = staging(sizeof(float));
    check(ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
    wait_comm("barrier");
    wait_stream();
  });
}

}  // namespace

std::string nccl_store_key(uint64_t epoch) {
  return cat("nccl/", epoch, "/id");
}

bool nccl_available() {
  return true;
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& options) {
  return std::make_unique<NcclCommunicator>(options);
}

std::unique_ptr<Communicator> make_nccl_communicator_for(Backend& backend, NcclOptions options) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  if (cuda == nullptr) {
    throw CommError(cat("make_nccl_communicator (epoch ", options.epoch, ", rank ", options.rank,
                        "): the backend '", backend.name(), "' is not a CUDA backend"));
  }
  options.device = cuda->device_index();
  options.stream = cuda->stream();
  return make_nccl_communicator(options);
}

}  // namespace tidal
