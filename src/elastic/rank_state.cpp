// Joining a group and the fixed-address operations on a joined rank.
#include "elastic/rank_state.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "comm/gloo_communicator.h"
#include "comm/nccl_communicator.h"
#include "common/logging.h"
#include "model/load_model.h"

namespace tidal {

std::unique_ptr<Communicator> make_epoch_group(Backend& backend, KvStoreClient& store, int rank,
                                               int size, uint64_t epoch,
                                               std::chrono::milliseconds timeout,
                                               const std::atomic<uint64_t>* lost_epoch) {
  if (backend.device() == DeviceKind::kCuda) {
    // NCCL on the backend's device and stream: the expert all-to-alls move device memory.
    NcclOptions nccl;
    nccl.store = &store;
    nccl.rank = rank;
    nccl.size = size;
    nccl.epoch = epoch;
    nccl.timeout = timeout;
    nccl.lost_epoch = lost_epoch;
    return make_nccl_communicator_for(backend, nccl);
  }
  // A Gloo wait cannot be interrupted from outside; a lost peer's closed connections end it (the
  // front kills a rank it declares failed), else its timeout does.
  GlooOptions gloo;
  gloo.store = &store;
  gloo.rank = rank;
  gloo.size = size;
  gloo.epoch = epoch;
  gloo.timeout = timeout;
  return make_gloo_communicator(gloo);
}

std::unique_ptr<RankState> join_rank(const rank_protocol::RankConfig& config,
                                     const std::atomic<uint64_t>* lost_epoch) {
  auto rank = std::make_unique<RankState>();
  rank->config = config;
  rank->lost_epoch = lost_epoch;
  // A group on one machine spreads over its GPUs: "cuda" means cuda:<rank> here (an explicit
  // "cuda:N" is kept as given). A joining rank takes the device of its place in the new epoch.
  rank->backend = make_backend(config.device == "cuda" ? cat("cuda:", config.rank) : config.device);
  rank->tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_file(config.model_directory));
  const ModelConfig model_config = load_model_config(config.model_directory, config.dummy);
  rank->num_experts = static_cast<int>(model_config.num_experts);
  int num_moe_layers = 0;
  for (int64_t layer = 0; layer < model_config.num_layers; ++layer) {
    if (model_config.is_moe_layer(layer)) ++num_moe_layers;
  }
  TIDAL_CHECK(static_cast<int>(config.placements.size()) == std::max(num_moe_layers, 1),
              "the configuration places ", config.placements.size(), " MoE layers; the model has ",
              num_moe_layers);
  TIDAL_CHECK(config.max_num_ranks >= config.num_ranks, "max_num_ranks ", config.max_num_ranks,
              " is below the group's ", config.num_ranks, " ranks");
  rank->shape = eplb::table_shape(rank->num_experts, config.slots_per_rank, config.max_num_ranks);
  ModelShard shard;
  for (const std::vector<int32_t>& physical_to_logical : config.placements) {
    const eplb::Placement placement(rank->num_experts, config.num_ranks, config.slots_per_rank,
                                    physical_to_logical);
    rank->placements.push_back(placement);
    rank->tables.push_back(eplb::build_tables(placement, rank->shape));
    shard.slot_experts_by_moe_layer.push_back(placement.local_slot_to_logical(config.rank));
  }
  if (num_moe_layers == 0) shard.slot_experts_by_moe_layer.clear();
  rank->layer_in_motion.assign(rank->placements.size(), false);

  rank->store = std::make_unique<KvStoreClient>(
      KvStoreClientOptions{.endpoint = config.store_endpoint,
                           .timeout = std::chrono::milliseconds(config.comm_timeout_ms)});
  // TEST-ONLY: TIDAL_TEST_REFUSE_RENDEZVOUS_EPOCH=E makes rank 0's rendezvous of epoch E fail as
  // a refused connection does, for the front's retry; unset, it does nothing.
  if (const char* refuse = std::getenv("TIDAL_TEST_REFUSE_RENDEZVOUS_EPOCH");
      refuse != nullptr && config.rank == 0 && std::to_string(config.epoch) == refuse) {
    throw CommError(cat("rendezvous failed (epoch ", config.epoch,
                        ", TIDAL_TEST_REFUSE_RENDEZVOUS_EPOCH): Connection refused"));
  }
  rank->group =
      make_epoch_group(*rank->backend, *rank->store, config.rank, config.num_ranks, config.epoch,
                       std::chrono::milliseconds(config.comm_timeout_ms), lost_epoch);
  rank->executor =
      std::make_unique<ExpertParallelExecutor>(*rank->group, rank->tables, rank->shape);
  shard.executor = rank->executor.get();
  rank->model = load_model(config.model_directory, config.dummy, *rank->backend, shard);
  EngineOptions options = config.engine;
  options.dp_group = rank->group.get();
  rank->engine = std::make_unique<Engine>(*rank->backend, *rank->model, *rank->tokenizer, options);
  if (config.enable_eplb) {
    TIDAL_CHECK(config.eplb_interval > 0 && config.eplb_window > 0,
                "--eplb-interval and --eplb-window must be positive");
    // Load is counted on the device by the expert-parallel routing kernel and collected after
    // each step; weights move through the backend and the communicator (NCCL between GPUs).
    rank->load_window = std::make_unique<eplb::LoadWindow>(
        static_cast<int>(rank->placements.size()), rank->num_experts, config.eplb_window);
  }
  if (!config.joining) warm_and_capture(*rank);
  return rank;
}

double warm_and_capture(RankState& rank) {
  const auto start = std::chrono::steady_clock::now();
  // Counting is on while the graphs are captured, so that their replays count; the warm-up's own
  // tokens are no load and are dropped.
  rank.executor->set_load_window(rank.load_window.get());
  rank.engine->warm_up();
  rank.executor->discard_load(*rank.backend);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void set_layer_placement(RankState& rank, size_t moe_layer, const eplb::Placement& next,
                         bool upload) {
  const eplb::PlacementTables fresh = eplb::build_tables(next, rank.shape);
  eplb::PlacementTables& tables = rank.tables.at(moe_layer);
  TIDAL_CHECK(fresh.physical_to_logical.size() == tables.physical_to_logical.size() &&
                  fresh.replica_count.size() == tables.replica_count.size() &&
                  fresh.replica_slots.size() == tables.replica_slots.size(),
              "placement tables changed size");
  // Same vectors, same sizes: the executor (and a device copy) keeps reading the same addresses.
  tables.num_ranks = fresh.num_ranks;
  std::copy(fresh.physical_to_logical.begin(), fresh.physical_to_logical.end(),
            tables.physical_to_logical.begin());
  std::copy(fresh.replica_count.begin(), fresh.replica_count.end(), tables.replica_count.begin());
  std::copy(fresh.replica_slots.begin(), fresh.replica_slots.end(), tables.replica_slots.begin());
  // The steps (and their graphs) route from the device copies.
  if (upload) rank.executor->upload_tables(*rank.backend);
  rank.placements[moe_layer] = next;
  rank.layer_in_motion[moe_layer] = false;  // the tables now say what the slots hold
}

std::vector<std::vector<int32_t>> held_experts(const RankState& rank) {
  std::vector<std::vector<int32_t>> held;
  for (size_t layer = 0; layer < rank.placements.size(); ++layer) {
    held.push_back(rank.layer_in_motion[layer]
                       ? std::vector<int32_t>(static_cast<size_t>(rank.config.slots_per_rank), -1)
                       : rank.placements[layer].local_slot_to_logical(rank.config.rank));
  }
  return held;
}

std::vector<SlotBuffer> layer_slot_buffers(const RankState& rank, size_t moe_layer) {
  const std::vector<ExpertSlots> slots = rank.model->moe_expert_slots();
  TIDAL_CHECK(moe_layer < slots.size(), "MoE layer ", moe_layer, " of ", slots.size());
  TIDAL_CHECK(slots[moe_layer].gate_up.dim(0) == rank.config.slots_per_rank, "MoE layer ",
              moe_layer, " has ", slots[moe_layer].gate_up.dim(0), " slots, not ",
              rank.config.slots_per_rank);
  std::vector<SlotBuffer> buffers;
  for (const ExpertSlots::Region& region : slots[moe_layer].regions()) {
    buffers.push_back({.base = region.base, .slot_bytes = region.slot_bytes});
  }
  return buffers;
}

}  // namespace tidal
