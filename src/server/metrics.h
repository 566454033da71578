// Server metrics in the Prometheus text format: request counts by status, token counts, latency
// histograms, and per-rank engine gauges.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine_client.h"

namespace tidal {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> upper_bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What turns a rank's KV blocks into the capacity gauges: tokens per block (the same on every
// rank) and the served max_model_len. Zero block size: no capacity gauges.
struct KvCacheShape {
  int64_t block_size = 0;
  int64_t max_model_len = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  void count_response(int http_status);
  void count_finish(const std::string& reason);
  void add_prompt_tokens(int64_t count) { prompt_tokens_ += count; }
  void add_generation_tokens(int64_t count) { generation_tokens_ += count; }
  void observe_time_to_first_token(double seconds) { time_to_first_token_.observe(seconds); }
  void observe_inter_token_latency(double seconds) { inter_token_latency_.observe(seconds); }
  void observe_request_latency(double seconds) { request_latency_.observe(seconds); }

  // `loads` holds one snapshot per rank, in rank order; `scaling` is there when the engine can
  // change its rank count.
  std::string render(const std::vector<EngineLoad>& loads,
                     const std::optional<ScaleStats>& scaling = std::nullopt,
                     const KvCacheShape& kv_cache = {}) const;
  // The HTTP front's own gauges: open connections and generation choices admitted.
  static void render_front(size_t open_connections, int64_t choices_in_flight, std::string& out);

 private:
  static void render_scaling(const ScaleStats& stats, std::string& out);
  static void render_kv_capacity(const std::vector<EngineLoad>& loads, const KvCacheShape& kv_cache,
                                 std::string& out);

  mutable std::mutex mutex_;
  std::map<int, uint64_t> responses_by_status_;
  std::map<std::string, uint64_t> finishes_by_reason_;
  std::atomic<int64_t> prompt_tokens_{0};
  std::atomic<int64_t> generation_tokens_{0};
  Histogram time_to_first_token_;
  Histogram inter_token_latency_;
  Histogram request_latency_;
};

}  // namespace tidal
