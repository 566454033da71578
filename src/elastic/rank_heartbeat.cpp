// RankHeartbeat: one thread polling a DEALER socket and the lifeline pipe.
#include "elastic/rank_heartbeat.h"

#include <unistd.h>

#include <vector>
#include <zmq.hpp>

#include "common/logging.h"
#include "elastic/rank_protocol.h"

namespace tidal {

RankHeartbeat::RankHeartbeat(RankHeartbeatOptions options) : options_(std::move(options)) {
  thread_ = std::thread([this] { run(); });
}

RankHeartbeat::~RankHeartbeat() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void RankHeartbeat::run() {
  try {
    zmq::context_t context;
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::routing_id, options_.identity + kHeartbeatIdentitySuffix);
    socket.set(zmq::sockopt::linger, 0);
    // A front that cannot take heartbeats for a while must not make them pile up here.
    socket.set(zmq::sockopt::sndhwm, 16);
    socket.connect(options_.control_endpoint);
    const std::string beat = rank_protocol::encode({{"type", rank_protocol::kHeartbeat},
                                                    {"identity", options_.identity},
                                                    {"secret", options_.secret}});
    std::vector<zmq::pollitem_t> items = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
    if (options_.lifeline_fd >= 0) items.push_back({nullptr, options_.lifeline_fd, ZMQ_POLLIN, 0});
    auto next_beat = std::chrono::steady_clock::now();
    while (!stopping_.load()) {
      if (std::chrono::steady_clock::now() >= next_beat) {
        socket.send(zmq::buffer(beat), zmq::send_flags::dontwait);
        next_beat = std::chrono::steady_clock::now() + options_.period;
      }
      zmq::poll(items, options_.period);
      if ((items[0].revents & ZMQ_POLLIN) != 0) {
        zmq::message_t message;
        while (socket.recv(message, zmq::recv_flags::dontwait)) {
          const nlohmann::json decoded = rank_protocol::decode(message.to_string());
          if (decoded.at("type") == rank_protocol::kGroupLost) {
            const auto epoch = decoded.at("epoch").get<uint64_t>();
            uint64_t seen = lost_epoch_.load();
            while (seen < epoch && !lost_epoch_.compare_exchange_weak(seen, epoch)) {
            }
          }
        }
      }
      if (items.size() > 1 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) != 0) {
        char byte = 0;
        // Nobody writes to the pipe: readable means its write end closed with the front.
        if (::read(options_.lifeline_fd, &byte, 1) <= 0) {
          log_line(LogLevel::kError, "the front is gone (lifeline closed); this rank exits");
          ::_exit(3);
        }
      }
    }
  } catch (const std::exception& error) {
    log_line(LogLevel::kError, cat("the heartbeat stopped: ", error.what()));
  }
}

}  // namespace tidal
