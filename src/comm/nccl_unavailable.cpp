// The NCCL factories of a build without CUDA: they exist so callers link, and say what is missing.
#include "comm/nccl_communicator.h"

namespace tidal {

std::string nccl_store_key(uint64_t epoch) {
  return cat("nccl/", epoch, "/id");
}

bool nccl_available() {
  return false;
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& options) {
  throw CommError(cat("make_nccl_communicator (epoch ", options.epoch, ", rank ", options.rank,
                      "): this build has no NCCL (configure with the 'cuda' preset)"));
}

std::unique_ptr<Communicator> make_nccl_communicator_for(Backend& /*backend*/,
                                                         NcclOptions options) {
  return make_nccl_communicator(options);
}

}  // namespace tidal
