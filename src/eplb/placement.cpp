// Placement: construction, validation and the derived logical -> replicas map.
#include "eplb/placement.h"

#include <algorithm>

#include "common/error.h"

namespace tidal::eplb {

int min_num_ranks(int num_logical, int slots_per_rank) {
  TIDAL_CHECK(slots_per_rank > 0, "slots_per_rank must be positive, got ", slots_per_rank);
  return (num_logical + slots_per_rank - 1) / slots_per_rank;
}

Status check_shape(int num_logical, int num_ranks, int slots_per_rank) {
  if (num_logical <= 0) {
    return Status::invalid_argument(
        cat("a placement needs at least one logical expert, got E=", num_logical));
  }
  if (slots_per_rank <= 0) {
    return Status::invalid_argument(
        cat("a placement needs at least one expert slot per rank, got S=", slots_per_rank));
  }
  const int min_ranks = min_num_ranks(num_logical, slots_per_rank);
  if (num_ranks < min_ranks) {
    return Status::invalid_argument(
        cat("E=", num_logical, " logical experts with S=", slots_per_rank,
            " slots per rank need at least ceil(E/S)=", min_ranks, " ranks, got R=", num_ranks));
  }
  return Status::ok();
}

RankMap identity_rank_map(int old_num_ranks, int new_num_ranks) {
  RankMap rank_map(new_num_ranks, -1);
  for (int rank_idx = 0; rank_idx < std::min(old_num_ranks, new_num_ranks); ++rank_idx) {
    rank_map[rank_idx] = rank_idx;
  }
  return rank_map;
}

void check_rank_map(const RankMap& rank_map, int old_num_ranks, int new_num_ranks) {
  TIDAL_CHECK(static_cast<int>(rank_map.size()) == new_num_ranks, "rank map has ", rank_map.size(),
              " entries but the new placement has ", new_num_ranks, " ranks");
  std::vector<bool> taken(old_num_ranks, false);
  for (int new_rank_idx = 0; new_rank_idx < new_num_ranks; ++new_rank_idx) {
    const int old_rank_idx = rank_map[new_rank_idx];
    if (old_rank_idx == -1) continue;
    TIDAL_CHECK(old_rank_idx >= 0 && old_rank_idx < old_num_ranks, "rank map sends new rank ",
                new_rank_idx, " to old rank ", old_rank_idx, ", outside [0, ", old_num_ranks,
                ") and not -1 (a fresh rank)");
    TIDAL_CHECK(!taken[old_rank_idx], "rank map continues old rank ", old_rank_idx,
                " in two new ranks");
    taken[old_rank_idx] = true;
  }
}

void Placement::validate(int num_logical, int num_ranks, int slots_per_rank,
                         const std::vector<int32_t>& physical_to_logical) {
  const Status shape = check_shape(num_logical, num_ranks, slots_per_rank);
  if (!shape.is_ok()) TIDAL_FAIL("invalid placement: ", shape.message());
  const int64_t num_physical = int64_t{num_ranks} * slots_per_rank;
  if (static_cast<int64_t>(physical_to_logical.size()) != num_physical) {
    TIDAL_FAIL("invalid placement: physical_to_logical has ", physical_to_logical.size(),
               " entries, expected R*S=", num_ranks, "*", slots_per_rank, "=", num_physical);
  }
  std::vector<int> num_copies(num_logical, 0);
  for (int64_t slot_id = 0; slot_id < num_physical; ++slot_id) {
    const int32_t logical_id = physical_to_logical[slot_id];
    if (logical_id < -1 || logical_id >= num_logical) {
      TIDAL_FAIL("invalid placement: slot ", slot_id, " (rank ", slot_id / slots_per_rank,
                 ", local slot ", slot_id % slots_per_rank, ") holds logical expert ", logical_id,
                 ", outside [0, ", num_logical, ") and not -1 (empty)");
    }
    if (logical_id >= 0) ++num_copies[logical_id];
  }
  for (int logical_id = 0; logical_id < num_logical; ++logical_id) {
    if (num_copies[logical_id] == 0) {
      TIDAL_FAIL("invalid placement: logical expert ", logical_id, " of E=", num_logical,
                 " has no replica in any of the ", num_physical, " slots");
    }
  }
}

Placement::Placement(int num_logical, int num_ranks, int slots_per_rank,
                     std::vector<int32_t> physical_to_logical)
    : num_logical_(num_logical),
      num_ranks_(num_ranks),
      slots_per_rank_(slots_per_rank),
      physical_to_logical_(std::move(physical_to_logical)) {
  validate(num_logical_, num_ranks_, slots_per_rank_, physical_to_logical_);
  logical_to_replicas_.resize(num_logical_);
  for (int slot_id = 0; slot_id < num_physical(); ++slot_id) {
    const int32_t logical_id = physical_to_logical_[slot_id];
    if (logical_id >= 0) logical_to_replicas_[logical_id].push_back(slot_id);
  }
}

int32_t Placement::logical_at(int rank_idx, int local_slot_idx) const {
  TIDAL_CHECK(rank_idx >= 0 && rank_idx < num_ranks_, "rank ", rank_idx, " outside [0, ",
              num_ranks_, ")");
  TIDAL_CHECK(local_slot_idx >= 0 && local_slot_idx < slots_per_rank_, "local slot ",
              local_slot_idx, " outside [0, ", slots_per_rank_, ")");
  return physical_to_logical_[rank_idx * slots_per_rank_ + local_slot_idx];
}

const std::vector<int32_t>& Placement::replicas(int logical_id) const {
  TIDAL_CHECK(logical_id >= 0 && logical_id < num_logical_, "logical expert ", logical_id,
              " outside [0, ", num_logical_, ")");
  return logical_to_replicas_[logical_id];
}

int Placement::max_num_replicas() const {
  size_t max_replicas = 0;
  for (const auto& slots : logical_to_replicas_)
    max_replicas = std::max(max_replicas, slots.size());
  return static_cast<int>(max_replicas);
}

std::vector<int32_t> Placement::local_slot_to_logical(int rank_idx) const {
  TIDAL_CHECK(rank_idx >= 0 && rank_idx < num_ranks_, "rank ", rank_idx, " outside [0, ",
              num_ranks_, ")");
  const auto first = physical_to_logical_.begin() + rank_idx * slots_per_rank_;
  return {first, first + slots_per_rank_};
}

std::string Placement::to_string() const {
  std::string text;
  for (int rank_idx = 0; rank_idx < num_ranks_; ++rank_idx) {
    text += cat(rank_idx == 0 ? "" : " | ", "rank ", rank_idx, ":");
    for (int local_idx = 0; local_idx < slots_per_rank_; ++local_idx) {
      text += cat(" ", logical_at(rank_idx, local_idx));
    }
  }
  return text;
}

bool Placement::operator==(const Placement& other) const {
  return num_logical_ == other.num_logical_ && num_ranks_ == other.num_ranks_ &&
         slots_per_rank_ == other.slots_per_rank_ &&
         physical_to_logical_ == other.physical_to_logical_;
}

}  // namespace tidal::eplb
