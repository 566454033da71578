// The control-plane messages between the front (coordinator) and rank processes, as msgpack
// over ZeroMQ. Every message is an object with a "type"; the helpers here give each payload a
// typed form on both sides.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/engine_client.h"
#include "engine/request_handoff.h"
#include "engine/request_output.h"
#include "engine/sampling_params.h"
#include "model/dummy_weights.h"

namespace tidal::rank_protocol {

// Message types.
// rank -> front: {rank, secret}. The front admits a rank only with its rank secret (see
// rank_secret.h); after that it knows the rank by its socket identity. A hello without it, or
// with a wrong one, gets kRefused and takes no place in the group (as does one that finds no
// free place).
inline constexpr char kHello[] = "hello";
inline constexpr char kRefused[] = "refused";      // front -> refused peer: {message}; it exits
inline constexpr char kConfig[] = "config";        // front -> rank: RankConfig
inline constexpr char kReady[] = "ready";          // rank -> front: {rank, max_model_len}
inline constexpr char kFailed[] = "failed";        // rank -> front: {rank, message}
inline constexpr char kSubmit[] = "submit";        // front -> rank: {id, prompt_ids, params}
inline constexpr char kSubmitted[] = "submitted";  // rank -> front: {id, ok, message}
inline constexpr char kAbort[] = "abort";          // front -> rank: {id}
inline constexpr char kOutputs[] = "outputs";      // rank -> front: {outputs: [...], load}
inline constexpr char kShutdown[] = "shutdown";    // front -> rank: {}
// Elastic transitions (see rank_group.h for the sequence). Every one carries the operation's
// serial `op`, so a late message of a failed operation is recognised and dropped.
inline constexpr char kHold[] = "hold";  // front -> old ranks: {op}; pause load balancing
inline constexpr char kHeld[] = "held";  // rank -> front: {op, placements, load}
// front -> old ranks: {op, epoch, new_rank (-1: leaving), num_ranks, placements, rank_map}
inline constexpr char kStandby[] = "standby";
inline constexpr char kStandbyReady[] = "standby_ready";  // rank -> front: {op}
inline constexpr char kCommit[] = "commit";               // front -> old and new ranks: {op}
// rank -> front: {op, warm_ups, bytes_moved, move_seconds, warm_seconds, pause_seconds}
inline constexpr char kCommitted[] = "committed";
inline constexpr char kHandoff[] = "handoff";    // leaving rank -> front: {op, requests, warm_ups}
inline constexpr char kRollback[] = "rollback";  // front -> old ranks: {op}
inline constexpr char kAdopt[] = "adopt";        // front -> rank: {request}
// Failure and recovery. Heartbeats come on a socket of their own (see rank_heartbeat.h), naming
// the rank's control identity; each carries the rank secret, so that nobody else can keep a
// silent rank alive by speaking for it. A rank whose communicator fails (a peer died or hung)
// drops every request (the front continues them from its ledger) and reports what its expert
// slots hold; the front then forms the survivors' epoch with one kRecover per survivor.
inline constexpr char kHeartbeat[] = "heartbeat";  // rank -> front: {identity, secret}
inline constexpr char kBreak[] = "break";          // front -> rank: {reason}; give up the epoch
// front -> a rank's heartbeat socket: {epoch}; that epoch (and older) is lost: a communicator wait
// of it gives up now (the stepping thread may be stuck in one and read no message)
inline constexpr char kGroupLost[] = "group_lost";
// rank -> front: {epoch, message, held: [MoE layer][slot] logical expert, -1 where unknown}
inline constexpr char kBroken[] = "broken";
// front -> survivor: {op, epoch, new_rank, num_ranks, placements, rank_map, loads: [[MoE layer,
// slot, expert], ...] this rank reads back from the checkpoint}
inline constexpr char kRecover[] = "recover";
// survivor -> front: {op, warm_ups, bytes_loaded, load_seconds, warm_seconds}
inline constexpr char kRecovered[] = "recovered";

// What a rank needs to join: the model, its place in the group, and how to reach the others.
struct RankConfig {
  std::string model_directory;  // the checkpoint, or only the tokenizer with dummy weights
  std::optional<DummyModelOptions> dummy;  // set: --load-format dummy
  std::string device = "cpu";
  int rank = 0;
  int num_ranks = 1;
  uint64_t epoch = 0;
  int slots_per_rank = 0;
  int max_num_ranks = 0;  // sizes the placement tables once, for every size the group may reach
  // [MoE layer][num_ranks * slots_per_rank]: each layer's placement (layers differ once load
  // balancing has run).
  std::vector<std::vector<int32_t>> placements;
  // A rank joining a running group at an elastic transition: it loads its weights, allocates its
  // KV cache and forms the epoch's communicator, then waits for the commit to warm up with the
  // others. false: a rank of the group's first epoch, which warms up as soon as it has joined.
  bool joining = false;
  std::string store_endpoint;
  EngineOptions engine;  // sizing; its dp_group is set by the rank itself
  int64_t comm_timeout_ms = 60000;
  // A joining rank waits this long (after joining) for its transition's commit or rollback.
  int64_t prepare_timeout_ms = 120000;
  // Expert load balancing: every eplb_interval steps, re-place each layer's experts for the load of
  // the last eplb_window steps.
  bool enable_eplb = false;
  int eplb_window = 1000;
  int eplb_interval = 3000;
  // Layers whose weights move per step once a rebalance is planned (0: all in one pause). The
  // others keep serving with their old placement until their turn.
  int eplb_layers_per_step = 0;
};

std::string encode(const nlohmann::json& message);
// Throws tidal::Error when the bytes are not a message.
nlohmann::json decode(const std::string& bytes);

nlohmann::json to_json(const RankConfig& config);
RankConfig config_from_json(const nlohmann::json& message);
nlohmann::json to_json(const SamplingParams& params);
SamplingParams params_from_json(const nlohmann::json& value);
nlohmann::json to_json(const RequestOutput& output);
RequestOutput output_from_json(const nlohmann::json& value);
nlohmann::json to_json(const EngineLoad& load);
EngineLoad load_from_json(const nlohmann::json& value);
nlohmann::json to_json(const RequestHandoff& handoff);
RequestHandoff handoff_from_json(const nlohmann::json& value);

}  // namespace tidal::rank_protocol
