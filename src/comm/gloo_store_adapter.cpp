// GlooStoreAdapter: forwards Gloo's store calls to KvStoreClient with the prefix prepended.
#include "comm/gloo_store_adapter.h"

#include <utility>

namespace tidal {

GlooStoreAdapter::GlooStoreAdapter(KvStoreClient& client, std::string prefix,
                                   std::chrono::milliseconds timeout)
    : client_(client), prefix_(std::move(prefix)), timeout_(timeout) {}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  client_.set(prefix_ + key, std::string_view(data.data(), data.size()));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  // Gloo expects get to wait for the key, as its own stores do.
  const KvBytes value = client_.get(prefix_ + key, timeout_);
  return {value.begin(), value.end()};
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  client_.wait(prefixed(keys), timeout_);
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes kNoTimeout (0) to mean "no limit of its own": keep the adapter's bound instead,
  // a rendezvous must never wait forever.
  client_.wait(prefixed(keys), timeout.count() > 0 ? timeout : timeout_);
}

std::vector<std::string> GlooStoreAdapter::prefixed(const std::vector<std::string>& keys) const {
  std::vector<std::string> result;
  result.reserve(keys.size());
  for (const std::string& key : keys) result.push_back(prefix_ + key);
  return result;
}

}  // namespace tidal
