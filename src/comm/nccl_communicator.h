// The GPU data plane: a Communicator over NCCL on one CUDA device and stream, rendezvoused through
// the coordinator's key-value store (rank 0 publishes the ncclUniqueId under "nccl/<epoch>/id").
//
// Memory: unlike the Gloo communicator, which moves host memory, this one moves DEVICE memory.
// all_to_all_v, send and recv take device pointers of the communicator's device; the bytes move
// on the stream given here (the CUDA backend's), ordered after the kernels already queued on it,
// and all_to_all_v returns without waiting for them (the consumers are queued on the same stream).
// For the small control traffic of the engine (the step flags, the dispatch counts), host pointers
// are accepted too: they are detected with cudaPointerGetAttributes and staged through a device
// buffer of the communicator's own, and such a call waits for the stream before it returns.
// all_reduce_* and barrier always wait for the stream, bounded by the timeout.
//
// This header needs no CUDA include. In a build without CUDA (TIDAL_CUDA off) the factories exist
// but throw CommError, so a CPU build links and says what is missing.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/kv_store.h"

struct CUstream_st;  // cudaStream_t

namespace tidal {

class Backend;

struct NcclOptions {
  // The rendezvous store, borrowed for the duration of make_nccl_communicator.
  KvStoreClient* store = nullptr;
  int rank = 0;
  int size = 1;
  uint64_t epoch = 0;
  // The CUDA device index and the stream every operation is enqueued on (null: the legacy
  // default stream; pass the backend's stream so communication is ordered with its kernels).
  int device = 0;
  CUstream_st* stream = nullptr;
  // Bound on the rendezvous and on every operation that waits; past it the communicator is
  // aborted and the operation throws CommError.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Store key of the unique id; empty means nccl_store_key(epoch). A retried rendezvous of the
  // same epoch needs the old key deleted (rank 0 overwrites it, but a fast rank may read the
  // stale one) or a fresh key.
  std::string store_key{};
  // Set by another thread (the rank's heartbeat, when the front reports the group lost) to the
  // newest epoch that is lost: every wait of a communicator of that epoch or an older one gives
  // up at once and aborts, instead of running to `timeout` on a collective a dead peer never
  // joins. Null: only the timeout and NCCL's own errors end a wait.
  const std::atomic<uint64_t>* lost_epoch = nullptr;
};

// The store key a communicator of this epoch rendezvouses under by default: "nccl/<epoch>/id".
std::string nccl_store_key(uint64_t epoch);

// True when this build has NCCL (the CUDA build).
bool nccl_available();

// Every rank of the group calls this with the same epoch and size and its own rank; blocks until
// all have joined (ncclCommInitRank); throws CommError naming the epoch and rank on failure or
// timeout. Each communicator owns its ncclComm_t; the destructor destroys it and never throws.
std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& options);

// The same on the device and stream of `backend`, which must be a CudaBackend (options.device
// and options.stream are taken from it). Throws CommError for any other backend.
std::unique_ptr<Communicator> make_nccl_communicator_for(Backend& backend, NcclOptions options);

}  // namespace tidal
