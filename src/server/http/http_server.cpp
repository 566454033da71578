// HttpServer: the acceptor, one Session per connection (each on its own strand), the limits, and
// the drive loop of responses produced over time.
#include "server/http/http_server.h"

#include <sys/resource.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/logging.h"
#include "server/http/body_decoding.h"

namespace tidal {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

class Session;

struct HttpServer::Impl {
  explicit Impl(HttpServerOptions server_options, std::vector<HttpRoute> server_routes,
                HttpHooks server_hooks)
      : options(std::move(server_options)),
        routes(std::move(server_routes)),
        hooks(std::move(server_hooks)),
        io(options.io_threads),
        acceptor(io),
        workers(static_cast<size_t>(std::max(options.worker_threads, 1))) {}

  void accept();
  void refuse_connection(tcp::socket socket);
  const HttpRoute* route_for(const HttpRequest& request, bool& path_known) const;

  HttpServerOptions options;
  std::vector<HttpRoute> routes;
  HttpHooks hooks;
  net::io_context io;
  tcp::acceptor acceptor;
  net::thread_pool workers;          // destroyed (joined) before `io`: its tasks hold sessions
  std::string too_many_connections;  // the canned 503 for connections beyond the limit

  // Woken sessions: an engine step wakes thousands of streams at once, and one handler that
  // schedules them all costs one thread wake-up instead of one per stream.
  void wake(std::weak_ptr<Session> session);
  void pump_woken();
  std::mutex woken_mutex;
  std::vector<std::weak_ptr<Session>> woken;
  size_t woken_next = 0;  // the first of `woken` not yet scheduled
  bool pump_scheduled = false;

  std::mutex sessions_mutex;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
};

namespace {

constexpr size_t kMaxPipelinedBytes = 64 << 10;
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

bool is_loopback(const net::ip::address& address) {
  if (address.is_v4()) return address.to_v4().to_bytes()[0] == 127;
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return is_loopback(net::ip::make_address_v4(net::ip::v4_mapped, v6));
  return v6.is_loopback();
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The canned reply for a refused connection: written once, sent without parsing anything.
std::string serialize(const HttpResponse& response) {
  http::response<http::string_body> message{static_cast<http::status>(response.status), 11};
  message.set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) message.set(name, value);
  message.keep_alive(false);
  message.body() = response.body;
  message.prepare_payload();
  std::ostringstream out;
  out << message;
  return out.str();
}

}  // namespace

class Session final : public HttpExchange, public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)) {
    beast::error_code ec;
    const tcp::endpoint peer = stream_.socket().remote_endpoint(ec);
    peer_is_loopback_ = !ec && is_loopback(peer.address());
  }

  ~Session() override {
    if (producer_) producer_->cancel();
    std::lock_guard lock(server_.sessions_mutex);
    server_.sessions.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(server_.sessions_mutex);
      server_.sessions.emplace(this, weak_from_this());
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

  void respond(HttpResponse response) override {
    net::post(stream_.get_executor(),
              [self = shared_from_this(), response = std::move(response)]() mutable {
                if (!self->closed_) self->send_whole(std::move(response));
              });
  }

  void produce(std::shared_ptr<ResponseProducer> producer) override {
    net::post(stream_.get_executor(), [self = shared_from_this(), producer] {
      if (self->closed_) {
        producer->cancel();
        return;
      }
      self->producer_ = producer;
      // The wake-up never owns the session: it may run on the engine's thread, which must
      // never be the one that destroys a session.
      producer->attach(
          [impl = &self->server_, weak = std::weak_ptr<Session>(self)] { impl->wake(weak); });
      self->pump();
    });
  }

  void schedule_pump() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->pump(); });
  }

  // The server is stopping: end whatever runs here.
  void shut_down() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }
  // The same once the I/O threads have stopped: nothing else runs on the session then.
  void close_now() { close(); }

 private:
  const HttpLimits& limits() const { return server_.options.limits; }

  void read_request() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits().max_header_bytes));
    parser_->body_limit(limits().max_body_bytes);
    stream_.expires_after(first_request_ ? limits().read_timeout : limits().keep_alive_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  // A failed read: the client went away or timed out (close quietly), or sent something the
  // server refuses (answer with the status, then close).
  void on_read_error(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      return refuse(
          431, cat("the request headers are larger than ", limits().max_header_bytes, " bytes"));
    }
    if (ec == http::error::body_limit) {
      return refuse(413, cat("the request body is larger than the server accepts (",
                             limits().max_body_bytes, " bytes)"));
    }
    if (ec.category() == beast::error_code(http::error::end_of_stream).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return refuse(400, cat("malformed HTTP request: ", ec.message()));
    }
    close();
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    const auto& header = parser_->get();
    const size_t request_line = header.method_string().size() + header.target().size() + 10;
    if (request_line > limits().max_request_line) {
      return refuse(414,
                    cat("the request line is longer than ", limits().max_request_line, " bytes"));
    }
    if (static_cast<size_t>(std::distance(header.begin(), header.end())) > limits().max_headers) {
      return refuse(431, cat("the request has more than ", limits().max_headers, " headers"));
    }
    if (const auto expect = header.find(http::field::expect);
        expect != header.end() && beast::iequals(expect->value(), "100-continue")) {
      // The client waits for a go-ahead before sending the body (curl does for large ones).
      stream_.expires_after(limits().read_timeout);
      return net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                              [self = shared_from_this()](beast::error_code write_ec, size_t) {
                                if (write_ec) return self->close();
                                self->read_body();
                              });
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_body({});
    stream_.expires_after(limits().read_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    stream_.expires_never();
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    first_request_ = false;
    keep_alive_ = message.keep_alive();
    request_ = HttpRequest{};
    request_.method = std::string(message.method_string());
    const std::string_view target = message.target();
    const size_t question = target.find('?');
    request_.path = std::string(target.substr(0, question));
    if (question != std::string_view::npos)
      request_.query = std::string(target.substr(question + 1));
    for (const auto& field : message) {
      request_.headers.emplace_back(lower(field.name_string()), std::string(field.value()));
    }
    request_.peer_is_loopback = peer_is_loopback_;
    const std::string* encoding = request_.header("content-encoding");
    DecodedBody decoded = decode_body(encoding ? *encoding : std::string_view{},
                                      std::move(message.body()), limits().max_body_bytes);
    if (decoded.status != 200) return refuse(decoded.status, decoded.message);
    request_.body = std::move(decoded.body);
    busy_ = true;
    watch_peer();
    route();
  }

  void route() {
    bool path_known = false;
    const HttpRoute* route = server_.route_for(request_, path_known);
    if (server_.hooks.gate) {
      if (std::optional<HttpResponse> refused = server_.hooks.gate(request_, route)) {
        return send_whole(std::move(*refused));
      }
    }
    if (route == nullptr) return send_whole(server_.hooks.no_route(request_, path_known));
    auto run = [self = shared_from_this(), route, request = request_]() mutable {
      try {
        route->handler(std::move(request), self);
      } catch (const std::exception& error) {
        log_line(LogLevel::kError, cat("request failed: ", error.what()));
        self->respond(self->server_.hooks.refusal(500, error.what()));
      }
    };
    if (route->offload) {
      net::post(server_.workers, std::move(run));
    } else {
      run();
    }
  }

  // Keeps a read pending while a request is answered: a client that hangs up is noticed at once
  // (its generation is cancelled), and bytes it sends early (a pipelined request) are kept.
  void watch_peer() {
    if (watching_ || closed_ || buffer_.size() >= kMaxPipelinedBytes) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                              self->on_watch(ec, bytes);
                            });
  }

  void on_watch(beast::error_code ec, size_t bytes) {
    watching_ = false;
    if (!ec) buffer_.commit(bytes);
    if (resume_after_watch_) {
      resume_after_watch_ = false;
      if (ec && ec != net::error::operation_aborted) return close();
      return read_request();
    }
    if (ec == net::error::operation_aborted || closed_) return;
    if (ec) return close();  // the client went away: close() cancels its generation
    if (busy_) watch_peer();
  }

  // A refusal before routing: the connection closes after it (the rest of the request is not
  // read, so the stream cannot be trusted for a next one).
  void refuse(int status, const std::string& message) {
    keep_alive_ = false;
    busy_ = true;
    send_whole(server_.hooks.refusal(status, message));
  }

  void send_whole(HttpResponse response) {
    if (closed_ || writing_ || head_) return;  // one response per request
    if (server_.hooks.decorate) server_.hooks.decorate(request_, response);
    if (server_.hooks.count_response) server_.hooks.count_response(response.status);
    producer_.reset();
    whole_.emplace(static_cast<http::status>(response.status), 11);
    whole_->set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) whole_->set(name, value);
    whole_->keep_alive(keep_alive_);
    whole_->body() = std::move(response.body);
    whole_->prepare_payload();
    writing_ = true;
    http::async_write(stream_, *whole_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      self->whole_.reset();
      if (ec) return self->close();
      self->finish_exchange();
    });
  }

  // Asks the producer for what is ready and writes it; one write at a time.
  void pump() {
    if (writing_ || closed_ || !producer_) return;
    ResponseProducer::Produced produced;
    try {
      produced = producer_->produce();
    } catch (const std::exception& error) {
      log_line(LogLevel::kError, cat("response failed: ", error.what()));
      keep_alive_ = false;
      if (!head_) {
        produced.whole = server_.hooks.refusal(500, error.what());
      } else {
        produced.done = true;  // the body ends here; the connection closes after it
      }
    }
    if (produced.whole) return send_whole(std::move(*produced.whole));
    if (produced.head && !head_) {
      HttpResponse head = std::move(*produced.head);
      if (server_.hooks.decorate) server_.hooks.decorate(request_, head);
      if (server_.hooks.count_response) server_.hooks.count_response(head.status);
      head_.emplace(static_cast<http::status>(head.status), 11);
      head_->set(http::field::content_type, head.content_type);
      for (const auto& [name, value] : head.headers) head_->set(name, value);
      head_->keep_alive(keep_alive_);
      head_->chunked(true);
      head_serializer_.emplace(*head_);
      writing_ = true;
      return http::async_write_header(stream_, *head_serializer_,
                                      [self = shared_from_this(), chunk = std::move(produced.chunk),
                                       done = produced.done](beast::error_code ec, size_t) mutable {
                                        self->writing_ = false;
                                        if (ec) return self->close();
                                        self->write_chunk(std::move(chunk), done);
                                      });
    }
    if (head_) write_chunk(std::move(produced.chunk), produced.done);
  }

  void write_chunk(std::string chunk, bool done) {
    if (closed_) return;
    if (chunk.empty() && !done) return;  // nothing ready: the producer's wakeup brings more
    chunk_ = std::move(chunk);
    writing_ = true;
    auto written = [self = shared_from_this(), done](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      if (!done) return self->pump();
      self->head_serializer_.reset();
      self->head_.reset();
      self->producer_.reset();
      self->finish_exchange();
    };
    if (chunk_.empty()) {
      net::async_write(stream_, http::make_chunk_last(), std::move(written));
    } else if (done) {
      net::async_write(
          stream_,
          beast::buffers_cat(http::make_chunk(net::buffer(chunk_)), http::make_chunk_last()),
          std::move(written));
    } else {
      net::async_write(stream_, http::make_chunk(net::buffer(chunk_)), std::move(written));
    }
  }

  // The response is out: read the next request on a kept-alive connection, else close.
  void finish_exchange() {
    busy_ = false;
    if (!keep_alive_) return linger_close();
    if (watching_) {
      // The watch's read must end before the parser reads again; what it got is kept.
      resume_after_watch_ = true;
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    read_request();
  }

  // Sends FIN, then drains what the client still sends for a moment before closing: closing
  // with unread bytes would reset the connection and lose the response just written (a 413's).
  void linger_close() {
    if (closed_) return;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec || watching_) return close();
    stream_.expires_after(kLingerTimeout);
    drain();
  }

  void drain() {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->drain();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (producer_) {
      producer_->cancel();
      producer_.reset();
    }
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  HttpServer::Impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool peer_is_loopback_ = false;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;
  bool first_request_ = true;
  bool keep_alive_ = false;
  bool busy_ = false;     // a request is being answered
  bool writing_ = false;  // one write in flight at a time
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool closed_ = false;
  std::shared_ptr<ResponseProducer> producer_;
  std::optional<http::response<http::string_body>> whole_;
  std::optional<http::response<http::empty_body>> head_;
  std::optional<http::response_serializer<http::empty_body>> head_serializer_;
  std::string chunk_;
};

const HttpRoute* HttpServer::Impl::route_for(const HttpRequest& request, bool& path_known) const {
  path_known = false;
  for (const HttpRoute& route : routes) {
    const bool path_matches = route.prefix ? request.path.starts_with(route.path) &&
                                                 request.path.size() > route.path.size()
                                           : request.path == route.path;
    if (!path_matches) continue;
    path_known = true;
    if (route.method == request.method) return &route;
  }
  return nullptr;
}

void HttpServer::Impl::wake(std::weak_ptr<Session> session) {
  bool schedule = false;
  {
    std::lock_guard lock(woken_mutex);
    woken.push_back(std::move(session));
    schedule = !pump_scheduled;
    pump_scheduled = true;
  }
  if (schedule) net::post(io, [this] { pump_woken(); });
}

void HttpServer::Impl::pump_woken() {
  // A slice at a time, then this handler queues itself again behind whatever arrived meanwhile:
  // a new connection or a health check waits for one slice of streams, not for all of them.
  constexpr size_t kSlice = 64;
  std::vector<std::weak_ptr<Session>> ready;
  bool more = false;
  {
    std::lock_guard lock(woken_mutex);
    const size_t take = std::min(kSlice, woken.size() - woken_next);
    ready.assign(woken.begin() + static_cast<std::ptrdiff_t>(woken_next),
                 woken.begin() + static_cast<std::ptrdiff_t>(woken_next + take));
    woken_next += take;
    more = woken_next < woken.size();
    if (!more) {
      woken.clear();
      woken_next = 0;
      pump_scheduled = false;
    }
  }
  for (const std::weak_ptr<Session>& weak : ready) {
    if (std::shared_ptr<Session> session = weak.lock()) session->schedule_pump();
  }
  if (more) net::post(io, [this] { pump_woken(); });
}

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors, most likely: wait a moment rather than spin on the error.
      log_warning("accepting a connection failed: ", ec.message());
      auto timer = std::make_shared<net::steady_timer>(io, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) { accept(); });
      return;
    }
    size_t open = 0;
    {
      std::lock_guard lock(sessions_mutex);
      open = sessions.size();
    }
    if (open >= options.limits.max_connections) {
      refuse_connection(std::move(socket));
    } else {
      std::make_shared<Session>(*this, std::move(socket))->start();
    }
    accept();
  });
}

void HttpServer::Impl::refuse_connection(tcp::socket socket) {
  if (hooks.count_response) hooks.count_response(503);
  auto held = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*held, net::buffer(too_many_connections), [held](beast::error_code, size_t) {
    beast::error_code ec;
    held->shutdown(tcp::socket::shutdown_both, ec);
    held->close(ec);
  });
}

HttpServer::HttpServer(HttpServerOptions options, std::vector<HttpRoute> routes, HttpHooks hooks)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(routes), std::move(hooks))) {
  HttpResponse refusal = impl_->hooks.refusal(
      503, cat("the server has ", impl_->options.limits.max_connections,
               " open connections, its limit (--max-connections); retry shortly"));
  refusal.headers.emplace_back("Retry-After", "1");
  impl_->too_many_connections = serialize(refusal);
}

HttpServer::~HttpServer() {
  impl_->workers.join();
  // Producers still attached unhook from the engine before the I/O context goes away: a
  // wake-up must never reach a destroyed one.
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(impl_->sessions_mutex);
    for (auto& [raw, weak] : impl_->sessions) {
      if (std::shared_ptr<Session> session = weak.lock()) open.push_back(std::move(session));
    }
  }
  for (const std::shared_ptr<Session>& session : open) session->close_now();
}

int HttpServer::bind() {
  // Every connection is a file descriptor: take the hard limit, and say when even that is short.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 &&
      files.rlim_cur < impl_->options.limits.max_connections + 256) {
    log_warning("the open-file limit (", files.rlim_cur, ") is below --max-connections (",
                impl_->options.limits.max_connections,
                ") plus the server's own files: connections past it are refused by the kernel");
  }
  const HttpServerOptions& options = impl_->options;
  beast::error_code ec;
  tcp::resolver resolver(impl_->io);
  const auto endpoints =
      resolver.resolve(options.host, std::to_string(options.port),
                       tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    TIDAL_FAIL("cannot bind ", options.host, ":", options.port, ": ",
               ec ? ec.message() : "no address");
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    TIDAL_FAIL("cannot bind ", options.host, ":", options.port, " (", ec.message(),
               ": in use, or not an address of this host)");
  }
  return acceptor.local_endpoint().port();
}

void HttpServer::serve() {
  impl_->accept();
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.io_threads; ++i) {
    threads.emplace_back([this] { impl_->io.run(); });
  }
  impl_->io.run();
  for (std::thread& thread : threads) thread.join();
}

void HttpServer::stop() {
  net::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    std::vector<std::shared_ptr<Session>> open;
    {
      std::lock_guard lock(impl->sessions_mutex);
      for (auto& [raw, weak] : impl->sessions) {
        if (std::shared_ptr<Session> session = weak.lock()) open.push_back(std::move(session));
      }
    }
    for (const std::shared_ptr<Session>& session : open) session->shut_down();
    // Give the sessions a moment to close (their producers unhook from the engine), then end.
    auto timer = std::make_shared<net::steady_timer>(impl->io, std::chrono::milliseconds(200));
    timer->async_wait([impl, timer](beast::error_code) { impl->io.stop(); });
  });
}

size_t HttpServer::open_connections() const {
  std::lock_guard lock(impl_->sessions_mutex);
  return impl_->sessions.size();
}

}  // namespace tidal
