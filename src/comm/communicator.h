// Communicator: one rank's handle on an immutable group of ranks stamped with a topology epoch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/error.h"

namespace tidal {

// A collective or point-to-point operation failed: a peer is gone, an operation timed out, or the
// transport reported an error. The message names the operation, the epoch and the rank.
//
// Once an operation has thrown, the communicator is broken for good: every later operation throws
// CommError at once. Peers may be mid-collective, so the group cannot resynchronise; the caller
// builds a new communicator (epoch e+1) over the survivors instead.
class CommError : public Error {
 public:
  using Error::Error;
};

// One rank's handle on a group. Immutable: the rank set never changes; a new rank set is a new
// communicator with a new epoch, built while this one still serves.
//
// Every operation is collective over the whole group (except send/recv) and must be called by
// every rank in the same order; a rank with nothing to contribute still calls it with empty
// buffers. Every operation is bounded by the communicator's timeout and throws CommError when
// it runs out, so a dead peer never hangs a rank.
//
// Not thread-safe: one thread drives a communicator at a time.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual uint64_t epoch() const = 0;

  // In place over all ranks; every rank passes the same number of elements (0 is allowed).
  virtual void all_reduce_sum(std::span<int64_t> values) = 0;
  virtual void all_reduce_max(std::span<int64_t> values) = 0;
  virtual void all_reduce_sum(std::span<float> values) = 0;

  // Variable-count all-to-all of bytes. send holds size() segments packed in rank order, with
  // send_bytes[r] bytes for rank r; recv receives recv_bytes[r] bytes from rank r, packed in rank
  // order. recv_bytes on rank q must equal send_bytes[q] on each sender (exchange the counts first
  // with all_to_all). Any count may be 0, and send/recv may be null when their totals are 0.
  virtual void all_to_all_v(const void* send, std::span<const size_t> send_bytes, void* recv,
                            std::span<const size_t> recv_bytes) = 0;

  // Fixed-count all-to-all of one int64 per rank (e.g. a row of the dispatch count matrix):
  // recv_one_per_rank[r] receives send_one_per_rank[rank()] of rank r.
  void all_to_all(std::span<const int64_t> send_one_per_rank, std::span<int64_t> recv_one_per_rank);

  // Point-to-point, matched in order per (sender, receiver) pair. send returns once the peer has
  // taken the bytes, which may mean it waits for the matching recv: two ranks that both send
  // first to each other can stall until the timeout, so order pairs (lower rank sends first) or
  // use all_to_all_v. bytes may be 0; both sides must agree on it.
  virtual void send(int peer, const void* data, size_t bytes) = 0;
  virtual void recv(int peer, void* data, size_t bytes) = 0;

  virtual void barrier() = 0;

 protected:
  // "epoch e, rank r of n": every CommError message says where it happened.
  std::string where() const;
  // Throws CommError unless peer is another rank of this group.
  void check_peer(const char* op, int peer) const;
};

// Stands in for a communicator that broke and was closed (so that peers still blocked on it fail
// at once): every operation throws CommError naming why. Whatever still holds a reference to the
// group keeps a valid object until the next epoch's communicator replaces it.
std::unique_ptr<Communicator> make_broken_communicator(int rank, int size, uint64_t epoch,
                                                       std::string why);

}  // namespace tidal
