// A blocking HTTP/1.1 client for the CLI (`tidal scale`): one request per connection.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace tidal {

struct HttpReply {
  int status = 0;
  std::string body;
};

// `base_url` is http://host[:port] (no TLS). Throws tidal::Error naming the URL when the server
// cannot be reached or does not answer within `timeout`.
HttpReply http_call(const std::string& base_url, const std::string& method, const std::string& path,
                    const std::string& json_body,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    std::chrono::milliseconds timeout);

}  // namespace tidal
