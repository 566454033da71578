// rebalance: agree on load, plan, move, rewrite.
#include "elastic/rank_rebalance.h"

#include <algorithm>
#include <chrono>

#include "eplb/placement_diff.h"
#include "eplb/placement_policy.h"

namespace tidal {
namespace {

// mean / max of the ranks' loads; 1 when nothing was routed.
double balancedness(const eplb::Placement& placement, std::span<const double> load) {
  const std::vector<double> ranks = eplb::rank_loads(placement, load);
  const double max = *std::max_element(ranks.begin(), ranks.end());
  if (max <= 0) return 1.0;
  double sum = 0;
  for (const double value : ranks) sum += value;
  return sum / static_cast<double>(ranks.size()) / max;
}

}  // namespace

void plan_rebalance(RankState& rank, EplbReport& report) {
  const auto start = std::chrono::steady_clock::now();
  Communicator& group = *rank.group;
  std::vector<int64_t> totals = rank.load_window->totals();
  group.all_reduce_sum(std::span<int64_t>(totals));
  const int num_logical = rank.load_window->num_logical();
  const int num_ranks = group.size();
  const size_t num_layers = rank.placements.size();
  report.balancedness_before.assign(num_layers, 1.0);
  report.balancedness_after.assign(num_layers, 1.0);
  for (size_t layer = 0; layer < num_layers; ++layer) {
    std::vector<double> load(static_cast<size_t>(num_logical));
    for (size_t e = 0; e < load.size(); ++e) {
      load[e] = static_cast<double>(totals[layer * load.size() + e]);
    }
    const eplb::Placement current = rank.placements[layer];
    const eplb::Placement next = eplb::plan_placement(current, num_ranks, load);
    report.balancedness_before[layer] = balancedness(current, load);
    report.balancedness_after[layer] = balancedness(next, load);
    if (next != current) rank.eplb_pending.emplace_back(layer, next);
  }
  ++report.rebalances;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.seconds += seconds;
  report.longest_pause_seconds = std::max(report.longest_pause_seconds, seconds);
}

void move_pending_layers(RankState& rank, EplbReport& report, size_t max_layers) {
  const auto start = std::chrono::steady_clock::now();
  const int num_ranks = rank.group->size();
  for (size_t moved_layers = 0;
       !rank.eplb_pending.empty() && (max_layers == 0 || moved_layers < max_layers);
       ++moved_layers) {
    const auto [layer, next] = rank.eplb_pending.front();
    rank.eplb_pending.pop_front();
    const eplb::MovePlan plan = eplb::plan_moves(rank.placements[layer], next,
                                                 eplb::identity_rank_map(num_ranks, num_ranks));
    rank.layer_in_motion[layer] = true;
    const MoveStats moved =
        move_expert_weights(*rank.group, *rank.backend, plan, layer_slot_buffers(rank, layer));
    report.bytes_moved += moved.bytes_received + moved.bytes_copied;
    set_layer_placement(rank, layer, next, /*upload=*/false);
  }
  rank.executor->upload_tables(*rank.backend);  // once for the whole batch of layers
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.seconds += seconds;
  report.longest_pause_seconds = std::max(report.longest_pause_seconds, seconds);
}

std::vector<std::vector<double>> local_expert_load(const RankState& rank) {
  std::vector<std::vector<double>> load;
  if (rank.load_window == nullptr) return load;
  const std::vector<int64_t> totals = rank.load_window->totals();
  const auto num_logical = static_cast<size_t>(rank.load_window->num_logical());
  for (size_t layer = 0; layer < rank.placements.size(); ++layer) {
    load.emplace_back(totals.begin() + static_cast<std::ptrdiff_t>(layer * num_logical),
                      totals.begin() + static_cast<std::ptrdiff_t>((layer + 1) * num_logical));
  }
  return load;
}

}  // namespace tidal
