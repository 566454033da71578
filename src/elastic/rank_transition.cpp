// The rank's parts of an elastic transition: standby communicator, weight moves, switch.
#include "elastic/rank_transition.h"

#include <chrono>

#include "common/logging.h"
#include "eplb/placement_diff.h"

namespace tidal {

RankTransition transition_from_json(const nlohmann::json& message, int num_experts,
                                    int slots_per_rank) {
  RankTransition transition;
  transition.op = message.at("op").get<uint64_t>();
  transition.epoch = message.at("epoch").get<uint64_t>();
  transition.new_rank = message.at("new_rank").get<int>();
  transition.num_ranks = message.at("num_ranks").get<int>();
  transition.rank_map = message.at("rank_map").get<eplb::RankMap>();
  for (const nlohmann::json& layer : message.at("placements")) {
    transition.next.emplace_back(num_experts, transition.num_ranks, slots_per_rank,
                                 layer.get<std::vector<int32_t>>());
  }
  TIDAL_CHECK(static_cast<int>(transition.rank_map.size()) == transition.num_ranks,
              "a transition to ", transition.num_ranks, " ranks with a rank map of ",
              transition.rank_map.size());
  return transition;
}

StandbyGroup::StandbyGroup(RankState& rank, const RankTransition& transition) : op_(transition.op) {
  Backend* backend = rank.backend.get();
  const rank_protocol::RankConfig config = rank.config;
  const std::atomic<uint64_t>* lost_epoch = rank.lost_epoch;
  thread_ = std::thread([this, backend, config, transition, lost_epoch] {
    try {
      const std::chrono::milliseconds timeout(config.comm_timeout_ms);
      KvStoreClient store({.endpoint = config.store_endpoint, .timeout = timeout});
      std::unique_ptr<Communicator> group =
          make_epoch_group(*backend, store, transition.new_rank, transition.num_ranks,
                           transition.epoch, timeout, lost_epoch);
      std::lock_guard lock(mutex_);
      group_ = std::move(group);
    } catch (const std::exception& error) {
      std::lock_guard lock(mutex_);
      error_ = error.what();
    }
    done_ = true;
  });
}

StandbyGroup::~StandbyGroup() {
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<Communicator> StandbyGroup::take() {
  TIDAL_CHECK(done(), "the standby communicator is not formed yet");
  std::lock_guard lock(mutex_);
  if (!error_.empty()) TIDAL_FAIL("forming the standby communicator failed: ", error_);
  TIDAL_CHECK(group_ != nullptr, "the standby communicator was already taken");
  return std::move(group_);
}

std::string StandbyGroup::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void move_for_transition(RankState& rank, const RankTransition& transition, CommitReport& report) {
  const auto start = std::chrono::steady_clock::now();
  Communicator& old_group = *rank.group;
  for (size_t layer = 0; layer < rank.placements.size(); ++layer) {
    const eplb::MovePlan full =
        eplb::plan_moves(rank.placements[layer], transition.next[layer], transition.rank_map);
    // The mover walks the old group, so destinations are renamed to the old ranks they continue;
    // joining ranks' slots are already filled.
    eplb::MovePlan plan;
    for (eplb::ExpertMove move : full.moves) {
      const int old_dst = transition.rank_map[static_cast<size_t>(move.dst_rank_idx)];
      if (old_dst < 0) continue;
      move.dst_rank_idx = old_dst;
      plan.moves.push_back(move);
    }
    if (plan.moves.empty()) continue;
    // In motion until switch_epoch gives the layer its new placement (a leaving rank only sends).
    rank.layer_in_motion[layer] = transition.new_rank >= 0;
    const MoveStats moved =
        move_expert_weights(old_group, *rank.backend, plan, layer_slot_buffers(rank, layer));
    report.bytes_moved += moved.bytes_received + moved.bytes_copied;
  }
  report.move_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void switch_epoch(RankState& rank, const RankTransition& transition,
                  std::unique_ptr<Communicator> group) {
  TIDAL_CHECK(group->epoch() == transition.epoch && group->rank() == transition.new_rank &&
                  group->size() == transition.num_ranks,
              "the standby communicator is for epoch ", group->epoch(), " rank ", group->rank(),
              " of ", group->size(), ", the transition for epoch ", transition.epoch, " rank ",
              transition.new_rank, " of ", transition.num_ranks);
  rank.executor->set_group(*group);
  rank.engine->set_dp_group(group.get());
  rank.group = std::move(group);  // the old epoch's communicator is closed here
  for (size_t layer = 0; layer < rank.placements.size(); ++layer) {
    set_layer_placement(rank, layer, transition.next[layer], /*upload=*/false);
  }
  rank.executor->upload_tables(*rank.backend);
  rank.config.rank = transition.new_rank;
  rank.config.num_ranks = transition.num_ranks;
  rank.config.epoch = transition.epoch;
  rank.eplb_steps = 0;
  rank.eplb_pending.clear();
}

}  // namespace tidal
