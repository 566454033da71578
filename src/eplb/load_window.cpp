// LoadWindow: a ring of per-step expert counts with running sums.
#include "eplb/load_window.h"

#include <algorithm>

#include "common/error.h"

namespace tidal::eplb {

LoadWindow::LoadWindow(int num_layers, int num_logical, int window_steps)
    : num_layers_(num_layers), num_logical_(num_logical), window_steps_(window_steps) {
  TIDAL_CHECK(num_layers > 0 && num_logical > 0 && window_steps > 0,
              "a load window needs positive sizes, got ", num_layers, " layers, ", num_logical,
              " experts, ", window_steps, " steps");
  const size_t row = static_cast<size_t>(num_layers) * static_cast<size_t>(num_logical);
  rows_.assign(row * static_cast<size_t>(window_steps), 0);
  pending_.assign(row, 0);
  totals_.assign(row, 0);
}

void LoadWindow::record(int layer, std::span<const int32_t> logical_ids) {
  TIDAL_CHECK(layer >= 0 && layer < num_layers_, "MoE layer ", layer, " of ", num_layers_);
  int64_t* counts = pending_.data() + static_cast<size_t>(layer) * num_logical_;
  for (const int32_t id : logical_ids) {
    TIDAL_CHECK(id >= 0 && id < num_logical_, "expert ", id, " of ", num_logical_);
    ++counts[id];
  }
}

void LoadWindow::record_counts(std::span<const int32_t> counts) {
  TIDAL_CHECK(counts.size() == pending_.size(), counts.size(), " expert counts for ", num_layers_,
              " layers of ", num_logical_, " experts");
  for (size_t i = 0; i < counts.size(); ++i) {
    TIDAL_CHECK(counts[i] >= 0, "a negative expert count");
    pending_[i] += counts[i];
  }
}

void LoadWindow::commit_step() {
  const size_t row = pending_.size();
  int64_t* slot = rows_.data() + static_cast<size_t>(next_row_) * row;
  for (size_t i = 0; i < row; ++i) {
    totals_[i] += pending_[i] - slot[i];  // slot holds the step sliding out, or zeros
    slot[i] = pending_[i];
  }
  std::fill(pending_.begin(), pending_.end(), 0);
  next_row_ = (next_row_ + 1) % window_steps_;
  num_filled_ = std::min(num_filled_ + 1, window_steps_);
}

void LoadWindow::discard_step() {
  std::fill(pending_.begin(), pending_.end(), 0);
}

std::span<const int64_t> LoadWindow::layer_totals(int layer) const {
  TIDAL_CHECK(layer >= 0 && layer < num_layers_, "MoE layer ", layer, " of ", num_layers_);
  return std::span<const int64_t>(totals_).subspan(static_cast<size_t>(layer) * num_logical_,
                                                   static_cast<size_t>(num_logical_));
}

}  // namespace tidal::eplb
