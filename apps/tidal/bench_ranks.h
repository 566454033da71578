// `tidal bench --ranks R`: R ranks as threads of this process, one GPU each, NCCL between them.
// Measures the point-to-point NVLink bandwidth, the expert all-to-all (dispatch and combine move
// the same bytes) against it, and the decode step under expert parallelism with each rank's floor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/tidal/bench_runner.h"
#include "model/dummy_weights.h"

namespace tidal::cli {

struct RankBenchOptions {
  int num_ranks = 2;
  DummyModelOptions model;
  BenchPlan plan;                          // decode only: prefill_tokens is ignored
  std::vector<int64_t> all_to_all_tokens;  // tokens per rank of each all-to-all size
  size_t p2p_bytes = size_t{1} << 30;
};

// Prints a table per part and returns every number.
nlohmann::json run_rank_bench(const RankBenchOptions& options);

}  // namespace tidal::cli
