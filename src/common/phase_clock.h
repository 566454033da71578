// PhaseClock: seconds between consecutive laps, for adding up where a loop spends its time.
#pragma once

#include <chrono>

namespace tidal {

class PhaseClock {
 public:
  // Seconds since construction or the previous lap.
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return seconds;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace tidal
