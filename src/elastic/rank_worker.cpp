// RankWorker: join, warm up, then the lockstep loop of sync, step and output.
#include "elastic/rank_worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <vector>
#include <zmq.hpp>

#include "backend/backend.h"
#include "comm/gloo_communicator.h"
#include "comm/kv_store.h"
#include "comm/nccl_communicator.h"
#include "common/logging.h"
#include "elastic/expert_mover.h"
#include "elastic/rank_protocol.h"
#include "engine/engine.h"
#include "engine/expert_parallel.h"
#include "eplb/load_window.h"
#include "eplb/placement.h"
#include "eplb/placement_diff.h"
#include "eplb/placement_policy.h"
#include "eplb/replica_tables.h"
#include "model/load_model.h"

namespace tidal {
namespace {

namespace protocol = rank_protocol;

class ControlChannel {
 public:
  ControlChannel(const std::string& endpoint, int rank)
      : socket_(context_, zmq::socket_type::dealer) {
    // Unique per process: ranks started by hand all ask for "any rank" (-1).
    socket_.set(zmq::sockopt::routing_id, cat("rank-", rank, "-pid-", ::getpid()));
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  void send(const nlohmann::json& message) {
    const std::string bytes = protocol::encode(message);
    socket_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }
  // The next message, or nullopt after `timeout`.
  std::optional<nlohmann::json> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    zmq::message_t message;
    if (!socket_.recv(message, zmq::recv_flags::dontwait)) return std::nullopt;
    return protocol::decode(message.to_string());
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
};

// Everything a joined rank holds, built in dependency order.
struct JoinedRank {
  protocol::RankConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<KvStoreClient> store;
  std::unique_ptr<Communicator> group;
  eplb::TableShape shape;
  // One placement and one set of tables per MoE layer. The executor reads `tables` by address, so
  // the vector is sized once here and a rebalance only rewrites its elements.
  std::vector<eplb::Placement> placements;
  std::vector<eplb::PlacementTables> tables;
  std::unique_ptr<ExpertParallelExecutor> executor;
  std::unique_ptr<Qwen3MoeModel> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<eplb::LoadWindow> load_window;  // only with enable_eplb
};

// What this rank reports about expert load balancing (EngineLoad's eplb_ fields).
struct EplbReport {
  int64_t rebalances = 0;
  int64_t bytes_moved = 0;
  double seconds = 0;
  std::vector<double> balancedness_before;
  std::vector<double> balancedness_after;
};

std::unique_ptr<JoinedRank> join(const protocol::RankConfig& config) {
  auto rank = std::make_unique<JoinedRank>();
  rank->config = config;
  // A group on one machine spreads over its GPUs: "cuda" means cuda:<rank> here (an explicit
  // "cuda:N" is kept as given).
  const bool on_cuda = config.device == "cuda" || config.device.rfind("cuda:", 0) == 0;
  rank->backend = make_backend(config.device == "cuda" ? cat("cuda:", config.rank) : config.device);
  rank->tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_file(config.model_directory));
  const ModelConfig model_config = load_model_config(config.model_directory);
  const auto num_experts = static_cast<int>(model_config.num_experts);
  const eplb::Placement placement(num_experts, config.num_ranks, config.slots_per_rank,
                                  config.physical_to_logical);
  rank->shape = eplb::table_shape(num_experts, config.slots_per_rank, config.num_ranks);
  int num_moe_layers = 0;
  for (int64_t layer = 0; layer < model_config.num_layers; ++layer) {
    if (model_config.is_moe_layer(layer)) ++num_moe_layers;
  }
  rank->placements.assign(static_cast<size_t>(std::max(num_moe_layers, 1)), placement);
  rank->tables.assign(rank->placements.size(), eplb::build_tables(placement, rank->shape));

  rank->store = std::make_unique<KvStoreClient>(
      KvStoreClientOptions{.endpoint = config.store_endpoint,
                           .timeout = std::chrono::milliseconds(config.comm_timeout_ms)});
  if (on_cuda) {
    // NCCL on the backend's device and stream: the expert all-to-alls move device memory.
    NcclOptions nccl;
    nccl.store = rank->store.get();
    nccl.rank = config.rank;
    nccl.size = config.num_ranks;
    nccl.epoch = config.epoch;
    nccl.timeout = std::chrono::milliseconds(config.comm_timeout_ms);
    rank->group = make_nccl_communicator_for(*rank->backend, nccl);
  } else {
    GlooOptions gloo;
    gloo.store = rank->store.get();
    gloo.rank = config.rank;
    gloo.size = config.num_ranks;
    gloo.epoch = config.epoch;
    gloo.timeout = std::chrono::milliseconds(config.comm_timeout_ms);
    rank->group = make_gloo_communicator(gloo);
  }
  rank->executor = std::make_unique<ExpertParallelExecutor>(
      *rank->group, rank->tables, rank->shape, config.engine.scheduler.max_num_batched_tokens);
  rank->model = load_model(config.model_directory, *rank->backend,
                           {.slot_experts = placement.local_slot_to_logical(config.rank),
                            .executor = rank->executor.get()});
  EngineOptions options = config.engine;
  options.dp_group = rank->group.get();
  rank->engine = std::make_unique<Engine>(*rank->backend, *rank->model, *rank->tokenizer, options);
  rank->engine->warm_up();  // collective: every rank of the epoch warms up together, once
  if (config.enable_eplb) {
    TIDAL_CHECK(config.eplb_interval > 0 && config.eplb_window > 0,
                "--eplb-interval and --eplb-window must be positive");
    TIDAL_CHECK(rank->backend->shares_host_memory(),
                "expert load balancing moves weights through host memory: CPU backend only");
    // Attached after the warm-up so that its batches never count as load.
    rank->load_window = std::make_unique<eplb::LoadWindow>(
        static_cast<int>(rank->placements.size()), num_experts, config.eplb_window);
    rank->executor->set_load_window(rank->load_window.get());
  }
  return rank;
}

// mean / max of the ranks' loads; 1 when nothing was routed.
double balancedness(const eplb::Placement& placement, std::span<const double> load) {
  const std::vector<double> ranks = eplb::rank_loads(placement, load);
  const double max = *std::max_element(ranks.begin(), ranks.end());
  if (max <= 0) return 1.0;
  double sum = 0;
  for (const double value : ranks) sum += value;
  return sum / static_cast<double>(ranks.size()) / max;
}

// Between two steps, on every rank at the same step: agree on the window's load, plan each
// layer's new placement (pure and deterministic, so every rank plans the same), move the weights
// into the existing slots and rewrite the tables in place.
void rebalance(JoinedRank& rank, EplbReport& report) {
  const auto start = std::chrono::steady_clock::now();
  Communicator& group = *rank.group;
  std::vector<int64_t> totals = rank.load_window->totals();
  group.all_reduce_sum(std::span<int64_t>(totals));
  const int num_logical = rank.load_window->num_logical();
  const int num_ranks = group.size();
  const std::vector<ExpertSlots> slots = rank.model->moe_expert_slots();
  TIDAL_CHECK(slots.size() == rank.placements.size(), "the model has ", slots.size(),
              " MoE layers, the placements ", rank.placements.size());
  const auto num_slots = static_cast<size_t>(rank.config.slots_per_rank);
  report.balancedness_before.assign(slots.size(), 1.0);
  report.balancedness_after.assign(slots.size(), 1.0);
  for (size_t layer = 0; layer < slots.size(); ++layer) {
    std::vector<double> load(static_cast<size_t>(num_logical));
    for (size_t e = 0; e < load.size(); ++e) {
      load[e] = static_cast<double>(totals[layer * load.size() + e]);
    }
    const eplb::Placement& current = rank.placements[layer];
    const eplb::Placement next = eplb::plan_placement(current, num_ranks, load);
    report.balancedness_before[layer] = balancedness(current, load);
    report.balancedness_after[layer] = balancedness(next, load);
    if (next == current) continue;
    const eplb::MovePlan plan =
        eplb::plan_moves(current, next, eplb::identity_rank_map(num_ranks, num_ranks));
    const SlotBuffer buffers[] = {{.base = static_cast<std::byte*>(slots[layer].gate_up.data),
                                   .slot_bytes = slots[layer].gate_up.num_bytes() / num_slots},
                                  {.base = static_cast<std::byte*>(slots[layer].down.data),
                                   .slot_bytes = slots[layer].down.num_bytes() / num_slots}};
    const MoveStats moved = move_expert_weights(group, plan, buffers);
    report.bytes_moved += moved.bytes_received + moved.bytes_copied;
    // Same vectors, same sizes: the executor (and a device copy) keeps reading the same addresses.
    const eplb::PlacementTables fresh = eplb::build_tables(next, rank.shape);
    eplb::PlacementTables& tables = rank.tables[layer];
    TIDAL_CHECK(fresh.physical_to_logical.size() == tables.physical_to_logical.size() &&
                    fresh.replica_count.size() == tables.replica_count.size() &&
                    fresh.replica_slots.size() == tables.replica_slots.size(),
                "placement tables changed size");
    tables.num_ranks = fresh.num_ranks;
    std::copy(fresh.physical_to_logical.begin(), fresh.physical_to_logical.end(),
              tables.physical_to_logical.begin());
    std::copy(fresh.replica_count.begin(), fresh.replica_count.end(), tables.replica_count.begin());
    std::copy(fresh.replica_slots.begin(), fresh.replica_slots.end(), tables.replica_slots.begin());
    rank.placements[layer] = next;
  }
  ++report.rebalances;
  report.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

EngineLoad load_of(const Engine& engine) {
  return {.num_running = engine.scheduler().num_running(),
          .num_waiting = engine.scheduler().num_waiting(),
          .num_kv_blocks = engine.block_manager().num_blocks(),
          .num_free_kv_blocks = engine.block_manager().num_free_blocks(),
          .num_preemptions = engine.scheduler().num_preemptions(),
          .num_steps = 0,
          .num_warm_ups = engine.runner().num_warm_ups(),
          .num_outstanding_tokens = 0};
}

void send_outputs(ControlChannel& control, const std::vector<RequestOutput>& outputs,
                  const Engine& engine, int64_t steps, const EplbReport& eplb) {
  nlohmann::json list = nlohmann::json::array();
  for (const RequestOutput& output : outputs) list.push_back(protocol::to_json(output));
  EngineLoad load = load_of(engine);
  load.num_steps = steps;
  load.eplb_rebalances = eplb.rebalances;
  load.eplb_bytes_moved = eplb.bytes_moved;
  load.eplb_seconds = eplb.seconds;
  load.eplb_balancedness_before = eplb.balancedness_before;
  load.eplb_balancedness_after = eplb.balancedness_after;
  control.send(
      {{"type", protocol::kOutputs}, {"outputs", list}, {"load", protocol::to_json(load)}});
}

}  // namespace

int run_rank_worker(const RankWorkerOptions& options) {
  ControlChannel control(options.control_endpoint, options.rank);
  control.send({{"type", protocol::kHello}, {"rank", options.rank}});
  std::unique_ptr<JoinedRank> rank;
  try {
    std::optional<nlohmann::json> config = control.receive(std::chrono::seconds(120));
    if (!config || config->at("type") != protocol::kConfig) {
      TIDAL_FAIL("rank ", options.rank, ": no configuration from the front at ",
                 options.control_endpoint);
    }
    rank = join(protocol::config_from_json(*config));
  } catch (const std::exception& error) {
    log_line(LogLevel::kError, cat("rank ", options.rank, " failed to join: ", error.what()));
    control.send({{"type", protocol::kFailed}, {"rank", options.rank}, {"message", error.what()}});
    return 1;
  }
  Engine& engine = *rank->engine;
  Communicator& group = *rank->group;
  const int rank_idx = rank->config.rank;  // assigned by the coordinator when not asked for
  control.send(
      {{"type", protocol::kReady}, {"rank", rank_idx}, {"max_model_len", engine.max_model_len()}});
  log_info("rank ", rank_idx, "/", group.size(), " ready (epoch ", group.epoch(), ")");

  bool stop_requested = false;
  int64_t steps = 0;
  EplbReport eplb;
  auto handle = [&](const nlohmann::json& message) {
    const std::string type = message.at("type").get<std::string>();
    if (type == protocol::kSubmit) {
      const std::string id = message.at("id").get<std::string>();
      const Status status =
          engine.add_request(id, message.at("prompt_ids").get<std::vector<int32_t>>(),
                             protocol::params_from_json(message.at("params")));
      control.send({{"type", protocol::kSubmitted},
                    {"id", id},
                    {"ok", status.is_ok()},
                    {"message", status.message()}});
    } else if (type == protocol::kAbort) {
      send_outputs(control, engine.abort(message.at("id").get<std::string>()), engine, steps, eplb);
    } else if (type == protocol::kShutdown) {
      stop_requested = true;
    }
  };
  try {
    for (;;) {
      // Commands first, all of them, without waiting.
      while (std::optional<nlohmann::json> message =
                 control.receive(std::chrono::milliseconds(0))) {
        handle(*message);
      }
      // Every rank agrees whether to step, and whether to stop, at the same point.
      int64_t flags[2] = {engine.has_work() ? 1 : 0, stop_requested ? 1 : 0};
      group.all_reduce_max(flags);
      if (flags[1] != 0) break;
      if (flags[0] == 0) {
        // Nobody has work: wait a little for a command so idle ranks do not spin.
        if (std::optional<nlohmann::json> message = control.receive(std::chrono::milliseconds(2))) {
          handle(*message);
        }
        continue;
      }
      std::vector<RequestOutput> outputs = engine.step();
      ++steps;
      if (!outputs.empty() || steps % 64 == 0) send_outputs(control, outputs, engine, steps, eplb);
      if (rank->load_window) {
        rank->load_window->commit_step();
        // Every rank counts the same steps (they step in lockstep), so all rebalance together.
        if (steps % rank->config.eplb_interval == 0) {
          rebalance(*rank, eplb);
          send_outputs(control, {}, engine, steps, eplb);
        }
      }
    }
  } catch (const std::exception& error) {
    log_line(LogLevel::kError, cat("rank ", rank_idx, " failed: ", error.what()));
    control.send({{"type", protocol::kFailed}, {"rank", rank_idx}, {"message", error.what()}});
    return 1;
  }
  log_info("rank ", rank_idx, " shut down after ", steps, " steps");
  return 0;
}

}  // namespace tidal
