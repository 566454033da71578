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

}  // namespace tidal
