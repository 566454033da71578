// Flattens a Placement into the fixed-size tables the device reads.
#include "eplb/replica_tables.h"

#include <algorithm>

#include "common/error.h"

namespace tidal::eplb {

TableShape table_shape(int num_logical, int slots_per_rank, int max_num_ranks) {
  const Status shape = check_shape(num_logical, max_num_ranks, slots_per_rank);
  if (!shape.is_ok()) TIDAL_FAIL("table shape for max_num_ranks: ", shape.message());
  const int unbounded_width = max_num_ranks * slots_per_rank - num_logical + 1;
  return {.num_logical = num_logical,
          .slots_per_rank = slots_per_rank,
          .max_num_ranks = max_num_ranks,
          .replica_width = num_logical >= slots_per_rank ? std::min(max_num_ranks, unbounded_width)
                                                         : unbounded_width};
}

PlacementTables build_tables(const Placement& placement, const TableShape& shape) {
  TIDAL_CHECK(placement.num_logical() == shape.num_logical &&
                  placement.slots_per_rank() == shape.slots_per_rank,
              "placement has E=", placement.num_logical(), " S=", placement.slots_per_rank(),
              " but the tables were sized for E=", shape.num_logical, " S=", shape.slots_per_rank);
  TIDAL_CHECK(placement.num_ranks() <= shape.max_num_ranks, "placement has ", placement.num_ranks(),
              " ranks but the tables were sized for at most ", shape.max_num_ranks);
  TIDAL_CHECK(placement.max_num_replicas() <= shape.replica_width, "an expert has ",
              placement.max_num_replicas(), " replicas but the tables hold at most ",
              shape.replica_width);

  PlacementTables tables;
  tables.num_ranks = placement.num_ranks();
  tables.physical_to_logical.assign(shape.max_num_ranks * shape.slots_per_rank, -1);
  std::copy(placement.physical_to_logical().begin(), placement.physical_to_logical().end(),
            tables.physical_to_logical.begin());
  tables.replica_count.resize(shape.num_logical);
  tables.replica_slots.assign(shape.num_logical * shape.replica_width, -1);
  for (int logical_id = 0; logical_id < shape.num_logical; ++logical_id) {
    const std::vector<int32_t>& slots = placement.replicas(logical_id);
    tables.replica_count[logical_id] = static_cast<int32_t>(slots.size());
    std::copy(slots.begin(), slots.end(),
              tables.replica_slots.begin() + logical_id * shape.replica_width);
  }
  return tables;
}

int32_t select_replica_slot(const PlacementTables& tables, const TableShape& shape,
                            int32_t logical_id, uint32_t token_idx) {
  TIDAL_CHECK(logical_id >= 0 && logical_id < shape.num_logical, "logical expert ", logical_id,
              " outside [0, ", shape.num_logical, ")");
  const auto num_replicas = static_cast<uint32_t>(tables.replica_count[logical_id]);
  const uint32_t replica_idx =
      replica_hash(token_idx, static_cast<uint32_t>(logical_id)) % num_replicas;
  return tables.replica_slots[logical_id * shape.replica_width + replica_idx];
}

}  // namespace tidal::eplb
