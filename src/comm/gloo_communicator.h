// The CPU data plane: a Communicator over Gloo's TCP transport, rendezvoused through the
// coordinator's key-value store.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/kv_store.h"

namespace tidal {

struct GlooOptions {
  // The rendezvous store: a client borrowed for the duration of make_gloo_communicator, or, when
  // null, the endpoint of the coordinator's KvStoreServer for a client of its own.
  KvStoreClient* store = nullptr;
  std::string store_endpoint{};
  int rank = 0;
  int size = 1;
  uint64_t epoch = 0;
  // Address other ranks reach this rank on (an IP or a resolvable host name).
  std::string hostname = "127.0.0.1";
  // Network interface to bind (e.g. "eth0"); when set it is used instead of hostname.
  std::string interface {};
  // Bound on the rendezvous and on every operation; past it the operation throws CommError.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Store key prefix of this communicator's rendezvous; empty means "gloo/<epoch>/". Every rank
  // of one communicator must use the same prefix, and no two live communicators may share one.
  // A retried rendezvous of the same epoch needs the old prefix deleted or a fresh prefix.
  std::string store_prefix{};
};

// The store prefix a communicator of this epoch rendezvouses under by default.
std::string gloo_store_prefix(uint64_t epoch);

// Connects the full mesh of options.size ranks; every rank of the group calls this with the same
// epoch and size and its own rank. Blocks until all have joined; throws CommError on timeout.
// Each communicator owns its TCP device and connections, so communicators of different epochs
// can live (and be built) side by side in one process and be destroyed independently.
// The first call sets SIGPIPE to ignored if it still has its default action: Gloo writes to
// sockets without MSG_NOSIGNAL, and a rank must survive writing to a peer that died.
std::unique_ptr<Communicator> make_gloo_communicator(const GlooOptions& options);

}  // namespace tidal
