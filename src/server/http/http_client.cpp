// http_call: resolve, connect, write, read, with Beast's stream timeouts.
#include "server/http/http_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/error.h"

namespace tidal {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

HttpReply http_call(const std::string& base_url, const std::string& method, const std::string& path,
                    const std::string& json_body,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    std::chrono::milliseconds timeout) {
  std::string rest = base_url;
  if (rest.starts_with("http://")) rest = rest.substr(7);
  TIDAL_CHECK(!rest.starts_with("https://"), base_url, ": only http:// is supported");
  while (rest.ends_with('/')) rest.pop_back();
  std::string host = rest;
  std::string port = "80";
  if (const size_t colon = rest.rfind(':');
      colon != std::string::npos && rest.find(']', colon) == std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);

  net::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  const auto endpoints = net::ip::tcp::resolver(io).resolve(host, port, ec);
  if (ec) TIDAL_FAIL(base_url, ": cannot resolve ", host, ": ", ec.message());
  stream.expires_after(timeout);
  stream.connect(endpoints, ec);
  if (ec) TIDAL_FAIL(base_url, ": cannot connect: ", ec.message());

  http::request<http::string_body> request{http::string_to_verb(method), path, 11};
  request.set(http::field::host, host);
  request.set(http::field::user_agent, "tidal");
  for (const auto& [name, value] : headers) request.set(name, value);
  if (!json_body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = json_body;
  }
  request.prepare_payload();
  stream.expires_after(timeout);
  http::write(stream, request, ec);
  if (ec) TIDAL_FAIL(base_url, ": sending ", method, " ", path, " failed: ", ec.message());
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response, ec);
  if (ec) TIDAL_FAIL(base_url, ": no reply to ", method, " ", path, ": ", ec.message());
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  return {.status = static_cast<int>(response.result_int()), .body = std::move(response.body())};
}

}  // namespace tidal
