// GlooStoreAdapter: Gloo's rendezvous Store over the tidal key-value store, under one key prefix.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "comm/kv_store.h"

namespace tidal {

// Each communicator rendezvouses under its own prefix (e.g. "gloo/<epoch>/"), so the keys of
// epoch e and e+1 never collide and the coordinator can drop a finished epoch's keys with one
// delete_prefix. Failures surface as CommError through Gloo's connectFullMesh.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  // The client is borrowed and must outlive the adapter. timeout bounds every get and every
  // wait that Gloo does not bound itself.
  GlooStoreAdapter(KvStoreClient& client, std::string prefix, std::chrono::milliseconds timeout);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::vector<std::string> prefixed(const std::vector<std::string>& keys) const;

  KvStoreClient& client_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

}  // namespace tidal
