// LoadWindow: tokens routed to each logical expert per MoE layer, summed over the last N steps.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tidal::eplb {

// The load signal the rebalancer plans from. A step's counts accumulate in a pending row (record)
// and join the window when the step ends (commit_step), so a step that never ends (warm-up, a
// failed step) never counts. The window keeps one row per step, so the oldest step can be
// subtracted exactly when it slides out; sums are integers, so every rank's sum is reproducible.
class LoadWindow {
 public:
  // Throws tidal::Error unless every size is positive.
  LoadWindow(int num_layers, int num_logical, int window_steps);

  int num_layers() const { return num_layers_; }
  int num_logical() const { return num_logical_; }
  int window_steps() const { return window_steps_; }
  // Steps committed into the window so far, at most window_steps.
  int num_steps() const { return num_filled_; }

  // Counts one routed choice per id (logical expert ids in [0, E)) of `layer` for this step.
  void record(int layer, std::span<const int32_t> logical_ids);
  // Adds a step's counts of every layer, [num_layers * num_logical] layer-major (what the device
  // counters of the expert-parallel executor hold).
  void record_counts(std::span<const int32_t> counts);
  // Ends the step: its counts join the window and the oldest step leaves when it is full.
  void commit_step();
  // Drops the pending counts (a step that did not complete).
  void discard_step();

  // [num_layers * num_logical], layer-major: the window's sums.
  const std::vector<int64_t>& totals() const { return totals_; }
  std::span<const int64_t> layer_totals(int layer) const;

 private:
  int num_layers_;
  int num_logical_;
  int window_steps_;
  int num_filled_ = 0;
  int next_row_ = 0;
  std::vector<int64_t> rows_;  // [window_steps][num_layers * num_logical], a ring
  std::vector<int64_t> pending_;
  std::vector<int64_t> totals_;
};

}  // namespace tidal::eplb
