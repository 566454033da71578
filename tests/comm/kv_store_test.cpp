// The rendezvous key-value store: set/get/wait across clients, timeouts, prefixes, binary values.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "comm/kv_store.h"

namespace tidal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

KvStoreClientOptions client_options(const KvStoreServer& server,
                                    std::chrono::milliseconds timeout = 5s) {
  return {.endpoint = server.endpoint(), .timeout = timeout};
}

TEST(KvStore, ReportsBoundEndpointWithRealPort) {
  KvStoreServer server;
  EXPECT_TRUE(server.endpoint().starts_with("tcp://127.0.0.1:"));
  EXPECT_NE(server.endpoint(), "tcp://127.0.0.1:*");
}

TEST(KvStore, SetThenGetAcrossClients) {
  KvStoreServer server;
  KvStoreClient writer(client_options(server));
  KvStoreClient reader(client_options(server));
  writer.set("a", "1");
  EXPECT_EQ(reader.get("a"), "1");
  writer.set("a", "2");  // overwrite
  EXPECT_EQ(reader.get("a"), "2");
  EXPECT_EQ(reader.try_get("missing"), std::nullopt);
  EXPECT_EQ(reader.try_get("a"), std::optional<KvBytes>("2"));
}

TEST(KvStore, BinaryValuesWithZeroBytesRoundTrip) {
  KvStoreServer server;
  KvStoreClient client(client_options(server));
  std::string value;
  for (int i = 0; i < 256; ++i) value.push_back(static_cast<char>(i));
  value += std::string(1000, '\0');
  client.set("bin", value);
  EXPECT_EQ(client.get("bin"), value);
  client.set("empty", "");
  EXPECT_EQ(client.get("empty"), "");
  const std::string key_with_zero("k\0ey", 4);
  client.set(key_with_zero, "v");
  EXPECT_EQ(client.get(key_with_zero), "v");
  EXPECT_EQ(client.try_get("k"), std::nullopt);
}

TEST(KvStore, WaitAndGetBlockUntilAnotherClientSets) {
  KvStoreServer server;
  KvStoreClient waiter(client_options(server));
  KvStoreClient getter(client_options(server));
  KvStoreClient writer(client_options(server));
  auto waited = std::async(std::launch::async, [&] { waiter.wait({"x", "y"}, 3s); });
  auto got = std::async(std::launch::async, [&] { return getter.get("y", 3s); });
  std::this_thread::sleep_for(50ms);
  writer.set("x", "1");
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(waited.wait_for(0ms), std::future_status::timeout) << "wait returned with y unset";
  writer.set("y", "2");
  EXPECT_NO_THROW(waited.get());
  EXPECT_EQ(got.get(), "2");
}

TEST(KvStore, WaitTimesOutWithCommError) {
  KvStoreServer server;
  KvStoreClient client(client_options(server));
  const auto start = Clock::now();
  EXPECT_THROW(client.wait({"never"}, 200ms), CommError);
  EXPECT_THROW(client.get("never", 200ms), CommError);
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 400ms);
  EXPECT_LT(elapsed, 2s);
  // The socket stays usable after a timeout.
  client.set("k", "v");
  EXPECT_EQ(client.get("k"), "v");
}

// A rolled-back transition abandons its epoch's rendezvous: ranks parked in it are released at
// once with "cancelled", later waits under the prefix fail at once, and other keys are untouched.
TEST(KvStore, CancelPrefixReleasesParkedWaitersAtOnce) {
  KvStoreServer server;
  KvStoreClient waiter(client_options(server));
  KvStoreClient coordinator(client_options(server));
  coordinator.set("gloo/3/0", "address");
  coordinator.set("gloo/4/0", "kept");
  const auto start = Clock::now();
  auto waited = std::async(std::launch::async, [&] { waiter.get("gloo/3/1", 10s); });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(coordinator.cancel_prefix("gloo/3/"), 1u);
  try {
    waited.get();
    FAIL() << "a cancelled wait returned a value";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("cancelled"), std::string::npos) << error.what();
  }
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_THROW(waiter.wait({"gloo/3/0"}, 5s), CommError);   // deleted and cancelled
  EXPECT_THROW(waiter.set("gloo/3/2", "late"), CommError);  // a late rank adds nothing
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_EQ(coordinator.get("gloo/4/0"), "kept");
}

TEST(KvStore, ParkedWaiterDoesNotBlockOtherRequests) {
  // The waiter parks for up to 30 s; every request of the other client must be answered while
  // it is still parked. A server that served one request at a time would answer them only once
  // the wait had ended, and the waiter would then have returned first. No clock bound: a loaded
  // machine slows both sides alike.
  KvStoreServer server;
  KvStoreClient waiter(client_options(server));
  KvStoreClient other(client_options(server));
  auto waited = std::async(std::launch::async, [&] { waiter.wait({"late"}, 30s); });
  std::this_thread::sleep_for(200ms);
  for (int i = 0; i < 50; ++i) other.set("k" + std::to_string(i), "v");
  EXPECT_EQ(other.count_prefix("k"), 50u);
  EXPECT_EQ(waited.wait_for(0s), std::future_status::timeout)
      << "the parked wait ended before the other client's requests were answered";
  other.set("late", "now");
  ASSERT_EQ(waited.wait_for(10s), std::future_status::ready) << "the parked wait never returned";
  waited.get();
}

TEST(KvStore, DeletePrefixDropsOnlyThatPrefix) {
  KvStoreServer server;
  KvStoreClient client(client_options(server));
  for (int epoch = 1; epoch <= 3; ++epoch) {
    for (int rank = 0; rank < 4; ++rank) {
      client.set("gloo/" + std::to_string(epoch) + "/" + std::to_string(rank), "addr");
    }
  }
  client.set("gloo/10/0", "addr");  // "gloo/1/" must not match "gloo/10/"
  EXPECT_EQ(client.count_prefix(""), 13u);
  EXPECT_EQ(client.delete_prefix("gloo/1/"), 4u);
  EXPECT_EQ(client.count_prefix("gloo/1/"), 0u);
  EXPECT_EQ(client.count_prefix("gloo/"), 9u);
  EXPECT_EQ(client.try_get("gloo/10/0"), std::optional<KvBytes>("addr"));
  EXPECT_EQ(client.delete_prefix("gloo/1/"), 0u);
  EXPECT_EQ(client.delete_prefix(""), 9u);
  EXPECT_EQ(client.count_prefix(""), 0u);
}

TEST(KvStore, ClientOfAGoneServerTimesOut) {
  std::string endpoint;
  { endpoint = KvStoreServer().endpoint(); }
  KvStoreClient client({.endpoint = endpoint, .timeout = 300ms});
  const auto start = Clock::now();
  EXPECT_THROW(client.set("a", "b"), CommError);
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST(KvStore, ServerShutsDownWithParkedWaiters) {
  auto server = std::make_unique<KvStoreServer>();
  KvStoreClient client({.endpoint = server->endpoint(), .timeout = 300ms});
  auto waited = std::async(std::launch::async,
                           [&] { EXPECT_THROW(client.wait({"never"}, 200ms), CommError); });
  std::this_thread::sleep_for(50ms);
  const auto start = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - start, 1s);
  waited.get();
}

}  // namespace
}  // namespace tidal
