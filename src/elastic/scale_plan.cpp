// plan_scale: validate the target, choose the leaving ranks, renumber, re-place every layer.
#include "elastic/scale_plan.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "eplb/placement_policy.h"

namespace tidal {

int ScalePlan::num_fresh() const {
  return static_cast<int>(std::count(rank_map.begin(), rank_map.end(), -1));
}

namespace {

// The ranks with the fewest outstanding tokens, ties to the highest rank.
std::vector<int> least_loaded(const std::vector<int64_t>& outstanding, int num_ranks, int count) {
  std::vector<int> order(static_cast<size_t>(num_ranks));
  std::iota(order.begin(), order.end(), 0);
  auto load = [&](int rank) {
    return outstanding.empty() ? int64_t{0} : outstanding[static_cast<size_t>(rank)];
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return load(a) != load(b) ? load(a) < load(b) : a > b; });
  order.resize(static_cast<size_t>(count));
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace

Result<ScalePlan> plan_scale(const ScalePlanInput& input, const ScaleRequest& request) {
  TIDAL_CHECK(!input.current.empty(), "plan_scale needs the current placement of every layer");
  const int current = input.current.front().num_ranks();
  const int target = request.target_ranks;
  if (target < 1) return Status::invalid_argument(cat("cannot scale to ", target, " ranks"));
  if (target > input.max_num_ranks) {
    return Status::invalid_argument(cat("cannot scale to ", target, " ranks: this server has ",
                                        input.max_num_ranks, " devices (--max-ranks)"));
  }
  if (Status shape = eplb::check_shape(input.num_logical, target, input.slots_per_rank);
      !shape.is_ok()) {
    return Status::invalid_argument(cat("cannot scale to ", target, " ranks: ", shape.message()));
  }
  ScalePlan plan;
  plan.old_num_ranks = current;
  plan.new_num_ranks = target;
  if (!request.remove_ranks.empty()) {
    std::vector<int> removed = request.remove_ranks;
    std::sort(removed.begin(), removed.end());
    if (std::adjacent_find(removed.begin(), removed.end()) != removed.end()) {
      return Status::invalid_argument("remove_ranks names a rank twice");
    }
    for (const int rank : removed) {
      if (rank < 0 || rank >= current) {
        return Status::invalid_argument(
            cat("remove_ranks names rank ", rank, "; the ranks are 0..", current - 1));
      }
    }
    if (static_cast<int>(removed.size()) != current - target) {
      return Status::invalid_argument(cat("scaling from ", current, " to ", target,
                                          " ranks removes ", std::max(current - target, 0),
                                          " ranks; remove_ranks names ", removed.size()));
    }
    plan.removed = std::move(removed);
  } else if (target < current) {
    plan.removed = least_loaded(input.outstanding_tokens, current, current - target);
  }
  for (int rank = 0; rank < current; ++rank) {
    if (!std::binary_search(plan.removed.begin(), plan.removed.end(), rank)) {
      plan.rank_map.push_back(rank);
    }
  }
  plan.rank_map.resize(static_cast<size_t>(target), -1);
  for (size_t layer = 0; layer < input.current.size(); ++layer) {
    const std::vector<double> none;
    const std::vector<double>& load = layer < input.load.size() ? input.load[layer] : none;
    plan.next.push_back(
        eplb::plan_placement(input.current[layer], target, load, {.rank_map = plan.rank_map}));
  }
  return plan;
}

}  // namespace tidal
