// Placement: the derived replica map, validation messages, shape and rank-map checks.
#include "eplb/placement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "eplb/eplb_test_util.h"

namespace tidal::eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::error_of;

TEST(Placement, DerivesReplicasAndLocalSlots) {
  // E=4 on R=3, S=2: experts 0 and 1 have a second copy on rank 2.
  const Placement placement(4, 3, 2, {0, 1, 2, 3, 1, 0});
  EXPECT_EQ(placement.num_physical(), 6);
  EXPECT_THAT(placement.replicas(0), ElementsAre(0, 5));
  EXPECT_THAT(placement.replicas(1), ElementsAre(1, 4));
  EXPECT_THAT(placement.replicas(3), ElementsAre(3));
  EXPECT_EQ(placement.max_num_replicas(), 2);
  EXPECT_THAT(placement.local_slot_to_logical(2), ElementsAre(1, 0));
  EXPECT_EQ(placement.logical_at(1, 1), 3);
  EXPECT_EQ(placement.to_string(), "rank 0: 0 1 | rank 1: 2 3 | rank 2: 1 0");
}

TEST(Placement, EmptySlotsAreAllowedWhenEveryExpertHasAReplica) {
  const Placement placement(3, 2, 2, {0, 1, 2, -1});
  EXPECT_EQ(placement.num_replicas(2), 1);
  EXPECT_THAT(placement.local_slot_to_logical(1), ElementsAre(2, -1));
}

TEST(Placement, RejectsExpertWithoutReplica) {
  EXPECT_THAT(error_of([] {
                Placement(4, 2, 2, {0, 1, 2, 2});
              }),
              HasSubstr("logical expert 3 of E=4 has no replica"));
}

TEST(Placement, RejectsIdOutOfRange) {
  EXPECT_THAT(error_of([] {
                Placement(4, 2, 2, {0, 1, 2, 4});
              }),
              HasSubstr("slot 3 (rank 1, local slot 1) holds logical expert 4, outside [0, 4)"));
  EXPECT_THAT(error_of([] {
                Placement(4, 2, 2, {0, -2, 2, 3});
              }),
              HasSubstr("holds logical expert -2"));
}

TEST(Placement, RejectsWrongTableSize) {
  EXPECT_THAT(error_of([] {
                Placement(4, 2, 2, {0, 1, 2});
              }),
              HasSubstr("3 entries, expected R*S=2*2=4"));
}

TEST(Placement, RejectsTooFewRanksNamingEAndSAndMinimum) {
  const std::string message = error_of([] { Placement(12, 3, 3, std::vector<int32_t>(9, 0)); });
  EXPECT_THAT(message, HasSubstr("E=12"));
  EXPECT_THAT(message, HasSubstr("S=3"));
  EXPECT_THAT(message, HasSubstr("at least ceil(E/S)=4 ranks, got R=3"));
}

TEST(CheckShape, IsAValueForTheCoordinator) {
  EXPECT_TRUE(check_shape(128, 3, 43).is_ok());
  EXPECT_TRUE(check_shape(8, 5, 2).is_ok());
  const Status too_few = check_shape(128, 2, 43);
  EXPECT_EQ(too_few.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(too_few.message(), HasSubstr("E=128 logical experts with S=43 slots per rank"));
  EXPECT_THAT(too_few.message(), HasSubstr("ceil(E/S)=3"));
  EXPECT_FALSE(check_shape(0, 1, 1).is_ok());
  EXPECT_FALSE(check_shape(4, 1, 0).is_ok());
  EXPECT_EQ(min_num_ranks(12, 3), 4);
  EXPECT_EQ(min_num_ranks(13, 3), 5);
}

TEST(RankMap, IdentityAndChecks) {
  EXPECT_THAT(identity_rank_map(2, 4), ElementsAre(0, 1, -1, -1));
  EXPECT_THAT(identity_rank_map(4, 2), ElementsAre(0, 1));
  EXPECT_NO_THROW(check_rank_map({0, 2, 3}, 4, 3));
  EXPECT_NO_THROW(check_rank_map({-1, 0, -1}, 1, 3));
  EXPECT_THAT(error_of([] {
                check_rank_map({0, 0}, 4, 2);
              }),
              HasSubstr("continues old rank 0 in two new ranks"));
  EXPECT_THAT(error_of([] { check_rank_map({0, 4}, 4, 2); }), HasSubstr("outside [0, 4)"));
  EXPECT_THAT(error_of([] { check_rank_map({0, 1}, 4, 3); }), HasSubstr("2 entries"));
}

}  // namespace
}  // namespace tidal::eplb
