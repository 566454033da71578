// The admin API: elastic scaling (ours and vLLM's aliases) and the topology.
#pragma once

#include <vector>

#include "engine/engine_client.h"
#include "server/http/http_server.h"

namespace tidal {

// POST /v1/admin/scale {"ranks": N, "remove_ranks": [...]}: starts a transition (202 with the
//   operation, 200 when N is the current size), 400 for an impossible target, 409 while another
//   runs (naming it);
// GET /v1/admin/scale/{id}: the operation's phase, result and timings;
// GET /v1/admin/topology: epoch, ranks, placement summary;
// POST /scale_elastic_ep {"new_data_parallel_size": N}: vLLM's, waits for the outcome;
// POST /is_scaling_elastic_ep: vLLM's, {"is_scaling_elastic_ep": bool}.
void add_admin_routes(std::vector<HttpRoute>& routes, EngineClient& engine);

}  // namespace tidal
