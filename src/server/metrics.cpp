// Prometheus text rendering of the server metrics.
#include "server/metrics.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace tidal {
namespace {

std::string format_number(double value) {
  std::ostringstream out;
  out.precision(12);
  out << value;
  return out.str();
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const auto bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  std::lock_guard lock(mutex_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  std::lock_guard lock(mutex_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + format_number(upper_bounds_[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + format_number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics()
    : time_to_first_token_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                            2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}),
      inter_token_latency_({0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.15,
                            0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5}),
      request_latency_(
          {0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0}) {}

void ServerMetrics::count_response(int http_status) {
  std::lock_guard lock(mutex_);
  ++responses_by_status_[http_status];
}

void ServerMetrics::count_finish(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++finishes_by_reason_[reason];
}

void ServerMetrics::render_front(size_t open_connections, int64_t choices_in_flight,
                                 std::string& out) {
  header(out, "tidal_http_connections", "gauge", "Open HTTP connections.");
  out += "tidal_http_connections " + std::to_string(open_connections) + "\n";
  header(out, "tidal_http_choices_in_flight", "gauge",
         "Generation choices admitted and not finished (running or queued).");
  out += "tidal_http_choices_in_flight " + std::to_string(choices_in_flight) + "\n";
}

std::string ServerMetrics::render(const std::vector<EngineLoad>& loads,
                                  const std::optional<ScaleStats>& scaling,
                                  const KvCacheShape& kv_cache) const {
  std::string out;
  {
    std::lock_guard lock(mutex_);
    header(out, "tidal_http_requests_total", "counter", "HTTP responses by status code.");
    for (const auto& [status, count] : responses_by_status_) {
      out += "tidal_http_requests_total{status=\"" + std::to_string(status) + "\"} " +
             std::to_string(count) + "\n";
    }
    header(out, "tidal_request_finished_total", "counter",
           "Finished generation requests by finish reason.");
    for (const auto& [reason, count] : finishes_by_reason_) {
      out += "tidal_request_finished_total{finish_reason=\"" + reason + "\"} " +
             std::to_string(count) + "\n";
    }
  }
  header(out, "tidal_prompt_tokens_total", "counter", "Prompt tokens processed.");
  out += "tidal_prompt_tokens_total " + std::to_string(prompt_tokens_.load()) + "\n";
  header(out, "tidal_generation_tokens_total", "counter", "Tokens generated.");
  out += "tidal_generation_tokens_total " + std::to_string(generation_tokens_.load()) + "\n";
  header(out, "tidal_time_to_first_token_seconds", "histogram", "Time to first token.");
  time_to_first_token_.render("tidal_time_to_first_token_seconds", out);
  header(out, "tidal_inter_token_latency_seconds", "histogram", "Time between output tokens.");
  inter_token_latency_.render("tidal_inter_token_latency_seconds", out);
  header(out, "tidal_request_latency_seconds", "histogram", "End-to-end request latency.");
  request_latency_.render("tidal_request_latency_seconds", out);

  struct Gauge {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const EngineLoad&);
  };
  static constexpr Gauge kGauges[] = {
      {"tidal_num_requests_running", "gauge", "Requests in the running batch.",
       [](const EngineLoad& l) { return static_cast<double>(l.num_running); }},
      {"tidal_num_requests_waiting", "gauge", "Requests waiting to be scheduled.",
       [](const EngineLoad& l) { return static_cast<double>(l.num_waiting); }},
      {"tidal_kv_cache_usage_perc", "gauge", "Fraction of KV cache blocks in use (0 to 1).",
       [](const EngineLoad& l) {
         return l.num_kv_blocks == 0 ? 0.0
                                     : 1.0 - static_cast<double>(l.num_free_kv_blocks) /
                                                 static_cast<double>(l.num_kv_blocks);
       }},
      {"tidal_num_preemptions_total", "counter", "Requests preempted for lack of KV blocks.",
       [](const EngineLoad& l) { return static_cast<double>(l.num_preemptions); }},
      {"tidal_engine_steps_total", "counter", "Engine steps run.",
       [](const EngineLoad& l) { return static_cast<double>(l.num_steps); }},
      {"tidal_warm_and_capture_total", "counter", "Workspace warm-ups (and graph captures).",
       [](const EngineLoad& l) { return static_cast<double>(l.num_warm_ups); }},
      {"tidal_cuda_graphs", "gauge",
       "Decode CUDA graphs held (one per batch-size bucket; 0 on CPU or with --enforce-eager).",
       [](const EngineLoad& l) { return static_cast<double>(l.num_decode_graphs); }},
      {"tidal_graph_steps_total", "counter", "Engine steps run by replaying a CUDA graph.",
       [](const EngineLoad& l) { return static_cast<double>(l.num_graph_steps); }},
      {"tidal_eplb_rebalances_total", "counter", "Expert load balancing rebalances run.",
       [](const EngineLoad& l) { return static_cast<double>(l.eplb_rebalances); }},
      {"tidal_eplb_bytes_moved_total", "counter",
       "Expert weight bytes this rank received or copied in rebalances.",
       [](const EngineLoad& l) { return static_cast<double>(l.eplb_bytes_moved); }},
      {"tidal_eplb_seconds_total", "counter", "Seconds this rank spent rebalancing experts.",
       [](const EngineLoad& l) { return l.eplb_seconds; }},
      {"tidal_eplb_longest_pause_seconds", "gauge",
       "The longest single pause of this rank's rebalancing (one batch of layers).",
       [](const EngineLoad& l) { return l.eplb_longest_pause_seconds; }},
  };
  for (const Gauge& gauge : kGauges) {
    header(out, gauge.name, gauge.type, gauge.help);
    for (size_t rank = 0; rank < loads.size(); ++rank) {
      out += std::string(gauge.name) + "{rank=\"" + std::to_string(rank) + "\"} " +
             format_number(gauge.value(loads[rank])) + "\n";
    }
  }
  header(out, "tidal_step_seconds_total", "counter",
         "Wall seconds of each rank's steps by phase: schedule, agree (with the group), forward "
         "(the model and the draw in decode-only steps), prefill (the same in steps with prompt "
         "tokens), outputs, balance (expert load balancing).");
  for (size_t rank = 0; rank < loads.size(); ++rank) {
    const StepSeconds& seconds = loads[rank].step_seconds;
    for (const auto& [phase, value] : {std::pair<const char*, double>{"schedule", seconds.schedule},
                                       {"agree", seconds.agree},
                                       {"forward", seconds.forward},
                                       {"prefill", seconds.prefill},
                                       {"outputs", seconds.outputs},
                                       {"balance", seconds.balance}}) {
      out += "tidal_step_seconds_total{rank=\"" + std::to_string(rank) + "\",phase=\"" + phase +
             "\"} " + format_number(value) + "\n";
    }
  }
  // Balancedness is computed from the group's summed load, so every rank reports the same
  // values: the first rank that has them speaks for all.
  const auto reporting = std::find_if(loads.begin(), loads.end(), [](const EngineLoad& l) {
    return !l.eplb_balancedness_before.empty();
  });
  header(out, "tidal_eplb_balancedness", "gauge",
         "Mean rank load / max rank load per MoE layer, over the load window of the last "
         "rebalance, with the placement before and after it.");
  if (reporting != loads.end()) {
    for (const auto& [when, values] : {std::pair<const char*, const std::vector<double>*>{
                                           "before", &reporting->eplb_balancedness_before},
                                       {"after", &reporting->eplb_balancedness_after}}) {
      for (size_t layer = 0; layer < values->size(); ++layer) {
        out += "tidal_eplb_balancedness{layer=\"" + std::to_string(layer) + "\",when=\"" + when +
               "\"} " + format_number((*values)[layer]) + "\n";
      }
    }
  }
  if (kv_cache.block_size > 0) render_kv_capacity(loads, kv_cache, out);
  if (scaling) render_scaling(*scaling, out);
  return out;
}

void ServerMetrics::render_kv_capacity(const std::vector<EngineLoad>& loads,
                                       const KvCacheShape& kv_cache, std::string& out) {
  header(out, "tidal_kv_cache_capacity_tokens", "gauge",
         "Tokens the rank's KV cache holds (its blocks times the block size).");
  for (size_t rank = 0; rank < loads.size(); ++rank) {
    out += "tidal_kv_cache_capacity_tokens{rank=\"" + std::to_string(rank) + "\"} " +
           std::to_string(loads[rank].num_kv_blocks * kv_cache.block_size) + "\n";
  }
  header(out, "tidal_kv_cache_max_concurrency", "gauge",
         "Requests of max_model_len tokens the rank's KV cache holds at once.");
  for (size_t rank = 0; rank < loads.size(); ++rank) {
    const double capacity = static_cast<double>(loads[rank].num_kv_blocks * kv_cache.block_size);
    out += "tidal_kv_cache_max_concurrency{rank=\"" + std::to_string(rank) + "\"} " +
           format_number(kv_cache.max_model_len > 0
                             ? capacity / static_cast<double>(kv_cache.max_model_len)
                             : 0.0) +
           "\n";
  }
  header(out, "tidal_max_model_len", "gauge", "The longest request served, prompt and output.");
  out += "tidal_max_model_len " + std::to_string(kv_cache.max_model_len) + "\n";
}

void ServerMetrics::render_scaling(const ScaleStats& stats, std::string& out) {
  struct Line {
    const char* name;
    const char* type;
    const char* help;
    double value;
  };
  const Line lines[] = {
      {"tidal_topology_epoch", "gauge", "The topology epoch the ranks serve in.",
       static_cast<double>(stats.epoch)},
      {"tidal_ranks", "gauge", "Ranks serving.", static_cast<double>(stats.num_ranks)},
      {"tidal_scale_requests_migrated_total", "counter",
       "Requests continued on another rank because theirs left the group.",
       static_cast<double>(stats.requests_migrated)},
      {"tidal_scale_weight_bytes_moved_total", "counter",
       "Expert weight bytes moved by elastic transitions.", static_cast<double>(stats.bytes_moved)},
      {"tidal_scale_last_prepare_seconds", "gauge", "The last transition's prepare phase.",
       stats.last_prepare_seconds},
      {"tidal_scale_last_pause_seconds", "gauge",
       "The last transition's commit pause (commit sent to every rank resumed).",
       stats.last_pause_seconds},
      {"tidal_scale_last_weight_move_seconds", "gauge",
       "The last transition's longest expert weight move on a rank.", stats.last_move_seconds},
      {"tidal_scale_last_warm_and_capture_seconds", "gauge",
       "The last transition's longest warm_and_capture on a rank.",
       stats.last_warm_and_capture_seconds},
      {"tidal_scale_last_total_seconds", "gauge", "The last transition, from request to resumed.",
       stats.last_total_seconds},
  };
  for (const Line& line : lines) {
    header(out, line.name, line.type, line.help);
    out += std::string(line.name) + " " + format_number(line.value) + "\n";
  }
  for (const Line& line :
       {Line{"tidal_rank_failures_total", "counter",
             "Ranks lost without being asked to leave (died, hung, failed).",
             static_cast<double>(stats.rank_failures)},
        Line{"tidal_requests_recovered_total", "counter",
             "Requests continued from the front's ledger after a rank failure.",
             static_cast<double>(stats.requests_recovered)},
        Line{"tidal_recovery_expert_bytes_reloaded_total", "counter",
             "Expert weight bytes read back from the checkpoint by recoveries.",
             static_cast<double>(stats.expert_bytes_reloaded)},
        Line{"tidal_recovery_last_seconds", "gauge",
             "The last recovery, from the failure's detection to serving again (the pause "
             "clients saw).",
             stats.recovery_seconds.empty() ? 0.0 : stats.recovery_seconds.back()}}) {
    header(out, line.name, line.type, line.help);
    out += std::string(line.name) + " " + format_number(line.value) + "\n";
  }
  header(out, "tidal_recoveries_total", "counter", "Recoveries from rank failures by result.");
  out += "tidal_recoveries_total{result=\"ok\"} " + std::to_string(stats.recoveries_ok) + "\n";
  out +=
      "tidal_recoveries_total{result=\"failed\"} " + std::to_string(stats.recoveries_failed) + "\n";
  Histogram recovery({0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0});
  for (const double seconds : stats.recovery_seconds) recovery.observe(seconds);
  header(out, "tidal_recovery_seconds", "histogram",
         "Recoveries from rank failures, from detection to serving again (the last 1000).");
  recovery.render("tidal_recovery_seconds", out);
  header(out, "tidal_scale_transitions_total", "counter", "Elastic transitions by result.");
  out +=
      "tidal_scale_transitions_total{result=\"ok\"} " + std::to_string(stats.transitions_ok) + "\n";
  out += "tidal_scale_transitions_total{result=\"failed\"} " +
         std::to_string(stats.transitions_failed) + "\n";
}

}  // namespace tidal
