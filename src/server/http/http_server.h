// HttpServer: HTTP/1.1 on Boost.Beast over Asio. A small fixed set of I/O threads serves every
// connection (epoll underneath): an open stream costs a socket and a few buffers, never a
// thread, so thousands of slow or idle clients cannot starve a health check. Work that can take
// a while (parsing, tokenizing, rendering templates) runs on a separate worker pool.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/http/http_message.h"

namespace tidal {

// What the server accepts of a client, each a `tidal serve` flag.
struct HttpLimits {
  size_t max_header_bytes = 16 << 10;       // request line and headers together
  size_t max_headers = 100;                 // header fields
  size_t max_request_line = 8 << 10;        // method, target and version
  size_t max_body_bytes = size_t{8} << 20;  // after chunked and Content-Encoding decoding
  // The whole request (headers and body) must arrive within this once its first byte has; a
  // client that trickles it in (slowloris) is disconnected.
  std::chrono::milliseconds read_timeout = std::chrono::seconds(30);
  // A kept-alive connection with no next request is closed after this.
  std::chrono::milliseconds keep_alive_timeout = std::chrono::seconds(5);
  size_t max_connections = 16384;  // beyond it a new connection gets 503 and is closed
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  int io_threads = 2;
  int worker_threads = 4;
  HttpLimits limits;
};

// A response produced over time (a generation), driven on its connection's I/O strand: produce()
// runs once when attached, again after every wakeup and after every write completes, so a slow
// reader is never handed more than one write at a time (what it has not taken waits in the
// producer's own queue).
class ResponseProducer {
 public:
  struct Produced {
    std::optional<HttpResponse> whole;  // a complete response; nothing else follows
    std::optional<HttpResponse> head;   // starts a chunked body (its body is ignored)
    std::string chunk;                  // body bytes of a started stream
    bool done = false;                  // the stream ends after `chunk`
  };
  virtual ~ResponseProducer() = default;
  // `wakeup` may be called from any thread when produce() would return more.
  virtual void attach(std::function<void()> wakeup) = 0;
  virtual Produced produce() = 0;
  // The client went away before the response ended (or the server is stopping).
  virtual void cancel() = 0;
};

// One request's reply channel; every method may be called from any thread, once.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void respond(HttpResponse response) = 0;
  virtual void produce(std::shared_ptr<ResponseProducer> producer) = 0;
};

struct HttpRoute {
  std::string method;
  std::string path;     // exact, or a prefix when `prefix`
  bool prefix = false;  // "/v1/admin/scale/" matches "/v1/admin/scale/<id>"
  // true: runs on the worker pool; false: on the I/O thread (only for work that never blocks).
  bool offload = true;
  std::function<void(HttpRequest request, std::shared_ptr<HttpExchange> exchange)> handler;
};

// Observes every request before routing: a response here (401, 403, 415, a CORS preflight...)
// is sent instead of the route's. Runs on the I/O thread.
using HttpGate =
    std::function<std::optional<HttpResponse>(const HttpRequest& request, const HttpRoute* route)>;
// Adjusts every response before it is sent (CORS headers). Runs on the I/O thread.
using HttpDecorator = std::function<void(const HttpRequest& request, HttpResponse& response)>;

struct HttpHooks {
  HttpGate gate;
  HttpDecorator decorate;
  std::function<void(int status)> count_response;
  // The response for a request no route takes (404, or 405 on a known path).
  std::function<HttpResponse(const HttpRequest& request, bool path_known)> no_route;
  // The response for a request the server refuses before routing (oversized, malformed, too many
  // connections): status and a message.
  std::function<HttpResponse(int status, const std::string& message)> refusal;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, std::vector<HttpRoute> routes, HttpHooks hooks);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; throws tidal::Error naming the address when it cannot. Returns the port.
  int bind();
  // Serves on the I/O threads until stop(); returns once they have all finished.
  void serve();
  // Stops accepting, closes every connection (producers are cancelled) and ends serve().
  void stop();

  size_t open_connections() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidal
