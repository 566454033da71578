// decode_body: zlib's streaming inflate, stopped as soon as the output passes the limit.
#include "server/http/body_decoding.h"

#include <zlib.h>

#include "common/error.h"
#include "server/http/http_message.h"

namespace tidal {
namespace {

DecodedBody inflate_bounded(const std::string& input, int window_bits, size_t limit) {
  z_stream stream{};
  if (inflateInit2(&stream, window_bits) != Z_OK) {
    return {.status = 500, .message = "zlib could not start", .body = {}};
  }
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  DecodedBody out;
  char chunk[64 << 10];
  int result = Z_OK;
  while (result != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof(chunk);
    result = inflate(&stream, Z_NO_FLUSH);
    if (result != Z_OK && result != Z_STREAM_END) {
      inflateEnd(&stream);
      return {.status = 400,
              .message = cat("the request body is not valid compressed data (zlib: ",
                             stream.msg != nullptr ? stream.msg : "truncated", ")"),
              .body = {}};
    }
    const size_t produced = sizeof(chunk) - stream.avail_out;
    if (out.body.size() + produced > limit) {
      inflateEnd(&stream);
      return {.status = 413,
              .message = cat("the decompressed request body is larger than the server accepts (",
                             limit, " bytes)"),
              .body = {}};
    }
    out.body.append(chunk, produced);
    if (result == Z_OK && produced == 0 && stream.avail_in == 0) {
      inflateEnd(&stream);
      return {.status = 400, .message = "the compressed request body is truncated", .body = {}};
    }
  }
  inflateEnd(&stream);
  return out;
}

}  // namespace

DecodedBody decode_body(std::string_view encoding, std::string body, size_t max_decoded_bytes) {
  const std::string_view coding = trim_header_value(encoding);
  const auto is = [coding](std::string_view name) { return equals_ignoring_case(coding, name); };
  if (coding.empty() || is("identity")) {
    return {.status = 200, .message = {}, .body = std::move(body)};
  }
  // MAX_WBITS + 16: gzip only; + 32: zlib or gzip, detected from the header.
  if (is("gzip") || is("x-gzip")) {
    return inflate_bounded(body, MAX_WBITS + 16, max_decoded_bytes);
  }
  if (is("deflate")) return inflate_bounded(body, MAX_WBITS + 32, max_decoded_bytes);
  return {.status = 415,
          .message =
              cat("Content-Encoding '", encoding, "' is not supported (identity, gzip or deflate)"),
          .body = {}};
}

}  // namespace tidal
