// Expert load balancing reports: the rank->front load message keeps every eplb field, and
// /metrics renders them per rank and per layer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "elastic/rank_protocol.h"
#include "server/metrics.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

EngineLoad balanced_load() {
  EngineLoad load;
  load.num_steps = 16;
  load.eplb_rebalances = 2;
  load.eplb_bytes_moved = 36864;
  load.eplb_seconds = 0.5;
  load.eplb_balancedness_before = {0.25, 0.5};
  load.eplb_balancedness_after = {0.75, 1.0};
  return load;
}

TEST(EplbReport, LoadMessageRoundTrips) {
  const EngineLoad load = balanced_load();
  const EngineLoad back = rank_protocol::load_from_json(
      rank_protocol::decode(
          rank_protocol::encode({{"type", "outputs"}, {"load", rank_protocol::to_json(load)}}))
          .at("load"));
  EXPECT_EQ(back.num_steps, 16);
  EXPECT_EQ(back.eplb_rebalances, 2);
  EXPECT_EQ(back.eplb_bytes_moved, 36864);
  EXPECT_DOUBLE_EQ(back.eplb_seconds, 0.5);
  EXPECT_EQ(back.eplb_balancedness_before, load.eplb_balancedness_before);
  EXPECT_EQ(back.eplb_balancedness_after, load.eplb_balancedness_after);
}

TEST(EplbReport, MetricsPerRankAndLayer) {
  const ServerMetrics metrics;
  const std::string text = metrics.render({balanced_load(), balanced_load()});
  EXPECT_THAT(text, HasSubstr("tidal_eplb_rebalances_total{rank=\"1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("tidal_eplb_bytes_moved_total{rank=\"0\"} 36864\n"));
  EXPECT_THAT(text, HasSubstr("tidal_eplb_seconds_total{rank=\"0\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("tidal_eplb_balancedness{layer=\"0\",when=\"before\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("tidal_eplb_balancedness{layer=\"1\",when=\"after\"} 1\n"));
  // Before any rebalance: counters at zero, no balancedness samples.
  const std::string idle = metrics.render({EngineLoad{}});
  EXPECT_THAT(idle, HasSubstr("tidal_eplb_rebalances_total{rank=\"0\"} 0\n"));
  EXPECT_THAT(idle, Not(HasSubstr("tidal_eplb_balancedness{")));
}

}  // namespace
}  // namespace tidal
