// libFuzzer target: any bytes into a socket of the real HTTP server (Beast parser, limits,
// Content-Encoding decoding, routing, the access policy, responses). The server must answer or
// close; nothing may crash, hang or leak. The access policy and the body decoder also get the
// bytes directly, where the fuzzer sees their branches most cheaply.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "server/access_policy.h"
#include "server/http/body_decoding.h"
#include "server/http/http_server.h"

namespace {

struct RunningServer {
  std::unique_ptr<tidal::HttpServer> server;
  std::thread thread;
  int port = 0;
};

RunningServer& running_server() {
  static RunningServer* running = [] {
    auto* r = new RunningServer;
    tidal::HttpServerOptions options;
    options.port = 0;
    options.io_threads = 1;
    options.worker_threads = 1;
    options.limits.max_body_bytes = 64 << 10;
    options.limits.max_header_bytes = 4096;
    options.limits.max_headers = 20;
    options.limits.max_request_line = 1024;
    options.limits.read_timeout = std::chrono::milliseconds(200);
    options.limits.keep_alive_timeout = std::chrono::milliseconds(200);
    std::vector<tidal::HttpRoute> routes;
    routes.push_back(
        {.method = "GET",
         .path = "/health",
         .prefix = false,
         .offload = false,
         .handler = [](tidal::HttpRequest, std::shared_ptr<tidal::HttpExchange> exchange) {
           exchange->respond({.status = 200, .content_type = "text/plain", .body = {}});
         }});
    routes.push_back(
        {.method = "POST",
         .path = "/v1/echo",
         .prefix = false,
         .offload = true,
         .handler = [](tidal::HttpRequest request, std::shared_ptr<tidal::HttpExchange> exchange) {
           exchange->respond({.status = 200,
                              .content_type = "application/octet-stream",
                              .body = std::move(request.body)});
         }});
    const tidal::AccessOptions access{.api_key = "key",
                                      .admin_api_key = {},
                                      .metrics_need_key = false,
                                      .allowed_origins = {"https://ok.example"}};
    tidal::HttpHooks hooks;
    hooks.gate = [access](const tidal::HttpRequest& request, const tidal::HttpRoute*) {
      return tidal::check_access(request, access);
    };
    hooks.decorate = [access](const tidal::HttpRequest& request, tidal::HttpResponse& response) {
      tidal::add_cors_headers(request, access, response);
    };
    hooks.no_route = [](const tidal::HttpRequest&, bool known) {
      return tidal::HttpResponse{
          .status = known ? 405 : 404, .content_type = "text/plain", .body = {}};
    };
    hooks.refusal = [](int status, const std::string& message) {
      return tidal::HttpResponse{.status = status, .content_type = "text/plain", .body = message};
    };
    r->server = std::make_unique<tidal::HttpServer>(options, std::move(routes), std::move(hooks));
    r->port = r->server->bind();
    r->thread = std::thread([r] { r->server->serve(); });
    return r;
  }();
  return *running;
}

// Connects to the server. libFuzzer's -timeout alarm (SIGALRM) may interrupt a blocking
// connect, which then goes on in the background: wait for it instead of calling it a failure.
int connect_to(int port) {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  if (sock < 0) {
    std::fprintf(stderr, "socket: %s\n", std::strerror(errno));
    std::abort();
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) return sock;
  if (errno == EINTR || errno == EINPROGRESS) {
    pollfd writable{.fd = sock, .events = POLLOUT, .revents = 0};
    int ready = 0;
    do ready = ::poll(&writable, 1, 5000);
    while (ready < 0 && errno == EINTR);
    int error = ready == 1 ? 0 : ETIMEDOUT;
    socklen_t length = sizeof(error);
    if (ready == 1) ::getsockopt(sock, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error == 0) return sock;
    errno = error;
  }
  std::fprintf(stderr, "connect: %s\n", std::strerror(errno));
  std::abort();  // the server stopped accepting: a bug
}

// Sends the bytes, half-closes, and reads until the server closes (bounded: a hang is a bug).
void exchange(int port, const uint8_t* data, size_t size) {
  const int sock = connect_to(port);
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = ::send(sock, data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server closed early (a refusal): fine
    sent += static_cast<size_t>(n);
  }
  ::shutdown(sock, SHUT_WR);
  char buffer[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    pollfd ready{.fd = sock, .events = POLLIN, .revents = 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) std::abort();  // the server neither answered nor closed
    if (::poll(&ready, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(sock, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
  }
  ::close(sock);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The decoder with each coding the header may name.
  for (const char* coding : {"gzip", "deflate", "identity", "br"}) {
    (void)tidal::decode_body(coding, text, 1 << 16);
  }
  // The policy on a request whose headers are the input's lines.
  tidal::HttpRequest request{.method = size % 2 ? "POST" : "OPTIONS",
                             .path = "/v1/admin/x",
                             .query = {},
                             .headers = {},
                             .body = text,
                             .peer_is_loopback = true};
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find('\n', start), text.size());
    const std::string line = text.substr(start, end - start);
    const size_t colon = line.find(':');
    if (colon != std::string::npos)
      request.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
    start = end + 1;
  }
  const tidal::AccessOptions access{
      .api_key = "k", .admin_api_key = {}, .metrics_need_key = true, .allowed_origins = {"*"}};
  (void)tidal::check_access(request, access);
  exchange(running_server().port, data, size);
  return 0;
}
