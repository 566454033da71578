// LoadWindow: counts per layer and expert, the window sliding, and uncommitted steps ignored.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "eplb/load_window.h"

namespace tidal::eplb {
namespace {

using ::testing::ElementsAre;

TEST(LoadWindow, CountsPerLayerAndExpert) {
  LoadWindow window(2, 3, 4);
  window.record(0, std::vector<int32_t>{0, 0, 2});
  window.record(1, std::vector<int32_t>{1});
  EXPECT_THAT(window.totals(), ElementsAre(0, 0, 0, 0, 0, 0));  // not committed yet
  window.commit_step();
  EXPECT_THAT(window.layer_totals(0), ElementsAre(2, 0, 1));
  EXPECT_THAT(window.layer_totals(1), ElementsAre(0, 1, 0));
  EXPECT_EQ(window.num_steps(), 1);
}

TEST(LoadWindow, OldestStepSlidesOut) {
  LoadWindow window(1, 2, 2);
  window.record(0, std::vector<int32_t>{0, 0, 0});
  window.commit_step();  // step 1: {3, 0}
  window.record(0, std::vector<int32_t>{1});
  window.commit_step();  // step 2: {0, 1}
  EXPECT_THAT(window.totals(), ElementsAre(3, 1));
  window.commit_step();  // step 3 (empty) pushes step 1 out
  EXPECT_THAT(window.totals(), ElementsAre(0, 1));
  window.record(0, std::vector<int32_t>{0});
  window.commit_step();  // step 4 pushes step 2 out
  EXPECT_THAT(window.totals(), ElementsAre(1, 0));
  EXPECT_EQ(window.num_steps(), 2);
}

TEST(LoadWindow, DiscardedStepNeverCounts) {
  LoadWindow window(1, 2, 3);
  window.record(0, std::vector<int32_t>{1, 1});
  window.discard_step();
  window.commit_step();
  EXPECT_THAT(window.totals(), ElementsAre(0, 0));
}

TEST(LoadWindow, DeviceCountsAddToThePendingStep) {
  LoadWindow window(2, 2, 3);
  window.record(1, std::vector<int32_t>{0});
  window.record_counts(std::vector<int32_t>{4, 0, 1, 2});  // layer-major, as the device holds them
  window.commit_step();
  EXPECT_THAT(window.layer_totals(0), ElementsAre(4, 0));
  EXPECT_THAT(window.layer_totals(1), ElementsAre(2, 2));
  EXPECT_THROW(window.record_counts(std::vector<int32_t>{1, 2, 3}), Error);
  EXPECT_THROW(window.record_counts(std::vector<int32_t>{1, -2, 3, 4}), Error);
}

TEST(LoadWindow, RejectsBadSizesAndIds) {
  EXPECT_THROW(LoadWindow(0, 2, 3), Error);
  EXPECT_THROW(LoadWindow(1, 2, 0), Error);
  LoadWindow window(1, 2, 3);
  EXPECT_THROW(window.record(0, std::vector<int32_t>{2}), Error);
  EXPECT_THROW(window.record(1, std::vector<int32_t>{0}), Error);
}

}  // namespace
}  // namespace tidal::eplb
