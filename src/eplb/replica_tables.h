// Device-ready flat placement tables of a fixed size, and the replica choice every rank agrees on.
#pragma once

#include <cstdint>
#include <vector>

#include "eplb/placement.h"
#include "eplb/replica_hash.h"

namespace tidal::eplb {

// Table sizes fixed at start-up for the largest rank count the server may reach, so the device
// copies keep their addresses (captured graphs read them) and a transition only rewrites them.
struct TableShape {
  int num_logical = 0;
  int slots_per_rank = 0;
  int max_num_ranks = 0;
  // Columns of replica_slots: the most replicas one expert may have at max_num_ranks. The policy
  // never puts two copies of an expert on one rank when E >= S, so that is max_num_ranks; when
  // E < S duplicates are unavoidable and the bound is max_num_ranks * S - E + 1.
  int replica_width = 0;
};

TableShape table_shape(int num_logical, int slots_per_rank, int max_num_ranks);

// What a backend copies into device memory, element for element.
struct PlacementTables {
  int num_ranks = 0;                         // the current R; ranks past it hold -1
  std::vector<int32_t> physical_to_logical;  // [max_num_ranks * S]; -1 for empty or absent slots
  std::vector<int32_t> replica_count;        // [E]: replicas of each logical expert, >= 1
  std::vector<int32_t> replica_slots;        // [E * replica_width]: physical slot ids, -1 padded
};

// Throws tidal::Error when the placement does not fit the shape (other E or S, more ranks than
// max_num_ranks, or an expert with more replicas than replica_width).
PlacementTables build_tables(const Placement& placement, const TableShape& shape);

// The physical slot that token token_idx (its index within the step's token batch, the same on
// every rank) uses for logical_id: replica (replica_hash mod replica_count) of that expert. A pure
// function of its arguments, so every rank and every run makes the same choice.
int32_t select_replica_slot(const PlacementTables& tables, const TableShape& shape,
                            int32_t logical_id, uint32_t token_idx);

}  // namespace tidal::eplb
