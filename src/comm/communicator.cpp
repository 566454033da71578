// Helpers every Communicator gets for free, built on its virtual operations.
#include "comm/communicator.h"

#include <vector>

namespace tidal {

void Communicator::all_to_all(std::span<const int64_t> send_one_per_rank,
                              std::span<int64_t> recv_one_per_rank) {
  const auto num_ranks = static_cast<size_t>(size());
  if (send_one_per_rank.size() != num_ranks || recv_one_per_rank.size() != num_ranks) {
    throw CommError(cat("all_to_all: expected ", num_ranks, " values per side, got ",
                        send_one_per_rank.size(), " to send and ", recv_one_per_rank.size(),
                        " to receive (epoch ", epoch(), ", rank ", rank(), ")"));
  }
  const std::vector<size_t> bytes(num_ranks, sizeof(int64_t));
  all_to_all_v(send_one_per_rank.data(), bytes, recv_one_per_rank.data(), bytes);
}

std::string Communicator::where() const {
  return cat("epoch ", epoch(), ", rank ", rank(), " of ", size());
}

void Communicator::check_peer(const char* op, int peer) const {
  if (peer < 0 || peer >= size() || peer == rank()) {
    throw CommError(cat(op, ": peer ", peer, " is not another rank of the group (", where(), ")"));
  }
}

namespace {

class BrokenCommunicator final : public Communicator {
 public:
  BrokenCommunicator(int rank, int size, uint64_t epoch, std::string why)
      : rank_(rank), size_(size), epoch_(epoch), why_(std::move(why)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  uint64_t epoch() const override { return epoch_; }
  void all_reduce_sum(std::span<int64_t>) override { fail("all_reduce_sum"); }
  void all_reduce_max(std::span<int64_t>) override { fail("all_reduce_max"); }
  void all_reduce_sum(std::span<float>) override { fail("all_reduce_sum"); }
  void all_to_all_v(const void*, std::span<const size_t>, void*, std::span<const size_t>) override {
    fail("all_to_all_v");
  }
  void send(int, const void*, size_t) override { fail("send"); }
  void recv(int, void*, size_t) override { fail("recv"); }
  void barrier() override { fail("barrier"); }

 private:
  [[noreturn]] void fail(const char* op) const {
    throw CommError(cat(op, " on a closed broken communicator (", where(), "): ", why_));
  }
  int rank_;
  int size_;
  uint64_t epoch_;
  std::string why_;
};

}  // namespace

std::unique_ptr<Communicator> make_broken_communicator(int rank, int size, uint64_t epoch,
                                                       std::string why) {
  return std::make_unique<BrokenCommunicator>(rank, size, epoch, std::move(why));
}

}  // namespace tidal
