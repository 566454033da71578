// HttpRequest and HttpResponse: what a route reads and returns, kept apart from the wire (Beast)
// so routes and the access policy can be tested and fuzzed without sockets.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tidal {

// A header value without the spaces and tabs HTTP allows around it.
inline std::string_view trim_header_value(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// ASCII case-insensitive equality: header values such as media types, codings and schemes.
inline bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

struct HttpRequest {
  std::string method;                                        // as sent: "GET", "POST", ...
  std::string path;                                          // the target without its query string
  std::string query;                                         // after '?', undecoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;                                          // Content-Encoding already undone
  bool peer_is_loopback = false;  // the client connected from 127.0.0.0/8 or ::1

  // The first header of that (lower-case) name, or nullptr.
  const std::string* header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) return &value;
    }
    return nullptr;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers = {};  // beyond Content-Type
};

}  // namespace tidal
