// Undoing a request body's Content-Encoding with the body limit applied to the decoded size, so
// a small gzip body cannot expand past what the server accepts (a "zip bomb").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tidal {

struct DecodedBody {
  int status = 200;     // 200, or the HTTP status of the refusal (400, 413, 415)
  std::string message;  // why it was refused
  std::string body;     // the decoded body when status is 200
};

// `encoding` is the Content-Encoding header's value (empty when absent): identity, gzip, x-gzip
// and deflate (zlib, as HTTP means it) are decoded; anything else, or a list of codings, is 415.
DecodedBody decode_body(std::string_view encoding, std::string body, size_t max_decoded_bytes);

}  // namespace tidal
