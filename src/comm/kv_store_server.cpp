// KvStoreServer: a ROUTER socket served by one thread, with parked get/wait requests.
#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "comm/communicator.h"
#include "comm/kv_store.h"
#include "comm/kv_store_protocol.h"
#include "common/logging.h"

namespace tidal {

namespace {

using Clock = std::chrono::steady_clock;
namespace proto = kv_protocol;

// A get or wait whose keys are not all there yet: answered by set() or by the deadline.
struct Waiter {
  zmq::message_t identity{};
  zmq::message_t request_id{};
  std::vector<std::string> keys{};
  bool wants_value = false;  // get: reply with keys[0]'s value
  Clock::time_point deadline{};
};

}  // namespace

struct KvStoreServer::Impl {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::string endpoint;
  std::thread thread;

  // Owned by the server thread once it runs.
  std::map<std::string, std::string, std::less<>> values;
  std::vector<Waiter> waiters;
  // Prefixes of abandoned rendezvous (a rolled-back transition's epoch): every get or wait under
  // one fails at once, so ranks still waiting in it are released instead of timing out.
  std::vector<std::string> cancelled;

  void run();
  void handle(std::vector<zmq::message_t>& frames);
  void reply(const zmq::message_t& identity, const zmq::message_t& request_id,
             std::string_view status, std::string_view payload = {}, bool has_payload = false);
  bool ready(const Waiter& waiter) const;
  void answer(Waiter& waiter);
  void answer_ready_waiters();
  bool is_cancelled(const std::vector<std::string>& keys) const;
  void expire_waiters(Clock::time_point now);
  int poll_timeout_ms(Clock::time_point now) const;
};

KvStoreServer::KvStoreServer(const KvStoreServerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  try {
    impl_->socket.set(zmq::sockopt::linger, 0);
    impl_->socket.bind(options.bind_address);
    impl_->endpoint = impl_->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    throw CommError(cat("kv store: cannot bind ", options.bind_address, ": ", e.what()));
  }
  // The socket moves to the server thread here; thread creation is the memory barrier ZeroMQ
  // asks for when a socket changes threads.
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

KvStoreServer::~KvStoreServer() {
  try {
    // Wakes the server thread out of poll with ETERM; it closes its socket and returns.
    impl_->context.shutdown();
    if (impl_->thread.joinable()) impl_->thread.join();
    impl_->context.close();
  } catch (...) {
    // A destructor never throws; the process is going down this path only at teardown.
  }
}

const std::string& KvStoreServer::endpoint() const {
  return impl_->endpoint;
}

void KvStoreServer::Impl::run() {
  try {
    while (true) {
      if (proto::poll_readable(socket, std::chrono::milliseconds(poll_timeout_ms(Clock::now())))) {
        // Drain everything queued so a burst of sets costs one poll.
        while (true) {
          std::vector<zmq::message_t> frames;
          if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
            break;
          try {
            handle(frames);
          } catch (const std::exception& e) {
            // One bad request (or a failed allocation for a huge value) must not stop the store
            // every rank depends on.
            log_warning("kv store server: dropped a request: ", e.what());
          }
        }
      }
      expire_waiters(Clock::now());
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != ETERM) log_warning("kv store server stopped: ", e.what());
  } catch (const std::exception& e) {
    log_warning("kv store server stopped: ", e.what());
  }
  waiters.clear();
  socket.close();
}

void KvStoreServer::Impl::handle(std::vector<zmq::message_t>& frames) {
  // [identity] [request id] [op] [args...]; anything shorter cannot even be answered.
  if (frames.size() < 3) return;
  const zmq::message_t& identity = frames[0];
  const zmq::message_t& request_id = frames[1];
  const std::string_view op = proto::view(frames[2]);
  const size_t num_args = frames.size() - 3;
  auto arg = [&](size_t i) { return proto::view(frames[3 + i]); };

  if (op == proto::kSet && num_args == 2) {
    if (is_cancelled({std::string(arg(0))})) {
      // A late rank of an abandoned rendezvous: its key would never be deleted.
      reply(identity, request_id, proto::kError, "cancelled: the rendezvous was abandoned", true);
      return;
    }
    values.insert_or_assign(std::string(arg(0)), std::string(arg(1)));
    reply(identity, request_id, proto::kOk);
    answer_ready_waiters();
    return;
  }
  if ((op == proto::kGet && num_args == 2) || (op == proto::kWait && num_args >= 1)) {
    const auto timeout_ms = proto::parse_int(arg(0));
    if (!timeout_ms || *timeout_ms < 0) {
      reply(identity, request_id, proto::kError, cat("bad timeout '", arg(0), "'"), true);
      return;
    }
    Waiter waiter{.identity = zmq::message_t(identity.data(), identity.size()),
                  .request_id = zmq::message_t(request_id.data(), request_id.size()),
                  .wants_value = op == proto::kGet,
                  .deadline = Clock::now() + std::chrono::milliseconds(*timeout_ms)};
    for (size_t i = 1; i < num_args; ++i) waiter.keys.emplace_back(arg(i));
    if (is_cancelled(waiter.keys)) {
      reply(identity, request_id, proto::kError, "cancelled: the rendezvous was abandoned", true);
    } else if (ready(waiter)) {
      answer(waiter);
    } else if (*timeout_ms == 0) {
      reply(identity, request_id, proto::kTimeout);
    } else {
      waiters.push_back(std::move(waiter));
    }
    return;
  }
  if ((op == proto::kDeletePrefix || op == proto::kCountPrefix) && num_args == 1) {
    const std::string_view prefix = arg(0);
    auto first = values.lower_bound(prefix);
    auto last = first;
    size_t count = 0;
    while (last != values.end() && last->first.starts_with(prefix)) ++last, ++count;
    if (op == proto::kDeletePrefix) values.erase(first, last);
    reply(identity, request_id, proto::kOk, std::to_string(count), true);
    return;
  }
  if (op == proto::kCancelPrefix && num_args == 1) {
    const std::string prefix(arg(0));
    cancelled.push_back(prefix);
    auto first = values.lower_bound(prefix);
    auto last = first;
    while (last != values.end() && last->first.starts_with(prefix)) ++last;
    values.erase(first, last);
    auto released = std::partition(waiters.begin(), waiters.end(), [&](const Waiter& waiter) {
      return !is_cancelled(waiter.keys);
    });
    const auto count = static_cast<size_t>(waiters.end() - released);
    for (auto it = released; it != waiters.end(); ++it) {
      reply(it->identity, it->request_id, proto::kError, "cancelled: the rendezvous was abandoned",
            true);
    }
    waiters.erase(released, waiters.end());
    reply(identity, request_id, proto::kOk, std::to_string(count), true);
    return;
  }
  reply(identity, request_id, proto::kError,
        cat("unknown request '", op, "' with ", num_args, " arguments"), true);
}

bool KvStoreServer::Impl::is_cancelled(const std::vector<std::string>& keys) const {
  return std::any_of(keys.begin(), keys.end(), [&](const std::string& key) {
    return std::any_of(cancelled.begin(), cancelled.end(),
                       [&](const std::string& prefix) { return key.starts_with(prefix); });
  });
}

void KvStoreServer::Impl::reply(const zmq::message_t& identity, const zmq::message_t& request_id,
                                std::string_view status, std::string_view payload,
                                bool has_payload) {
  std::vector<zmq::const_buffer> frames{zmq::buffer(identity.data(), identity.size()),
                                        zmq::buffer(request_id.data(), request_id.size()),
                                        zmq::buffer(status)};
  if (has_payload) frames.push_back(zmq::buffer(payload));
  // ROUTER drops a reply to a client that has gone away instead of blocking; that is what we
  // want: a vanished rank must not stall the store.
  (void)zmq::send_multipart(socket, frames, zmq::send_flags::dontwait);
}

bool KvStoreServer::Impl::ready(const Waiter& waiter) const {
  return std::all_of(waiter.keys.begin(), waiter.keys.end(),
                     [&](const std::string& key) { return values.contains(key); });
}

void KvStoreServer::Impl::answer(Waiter& waiter) {
  if (waiter.wants_value) {
    reply(waiter.identity, waiter.request_id, proto::kOk, values.find(waiter.keys[0])->second,
          true);
  } else {
    reply(waiter.identity, waiter.request_id, proto::kOk);
  }
}

void KvStoreServer::Impl::answer_ready_waiters() {
  auto still_waiting = std::partition(waiters.begin(), waiters.end(),
                                      [&](const Waiter& waiter) { return !ready(waiter); });
  for (auto it = still_waiting; it != waiters.end(); ++it) answer(*it);
  waiters.erase(still_waiting, waiters.end());
}

void KvStoreServer::Impl::expire_waiters(Clock::time_point now) {
  auto expired = std::partition(waiters.begin(), waiters.end(),
                                [&](const Waiter& waiter) { return waiter.deadline > now; });
  for (auto it = expired; it != waiters.end(); ++it)
    reply(it->identity, it->request_id, proto::kTimeout);
  waiters.erase(expired, waiters.end());
}

int KvStoreServer::Impl::poll_timeout_ms(Clock::time_point now) const {
  if (waiters.empty()) return -1;
  auto earliest = waiters.front().deadline;
  for (const Waiter& waiter : waiters) earliest = std::min(earliest, waiter.deadline);
  if (earliest <= now) return 0;
  // Round up so a wake-up never lands just before the deadline and spins.
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(earliest - now);
  return static_cast<int>(std::min<int64_t>(wait.count(), 1 << 30));
}

}  // namespace tidal
