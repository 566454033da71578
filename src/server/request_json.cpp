// Depth-bounded JSON parsing of request bodies: nlohmann's SAX parser (iterative) feeding a DOM
// builder that refuses to open a container past the limit.
#include "server/request_json.h"

#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace tidal {
namespace {

using Json = nlohmann::json;

// Builds the value as the events arrive, like nlohmann's own DOM parser, but stops the parse as
// soon as a container would open below max_depth: the parser never reads the rest of the body, so
// however deep the input, the value built is at most max_depth deep.
class BoundedDomBuilder {
 public:
  explicit BoundedDomBuilder(int32_t max_depth) : max_depth_(max_depth) {}

  bool null() { return add(Json(nullptr)) != nullptr; }
  bool boolean(bool value) { return add(Json(value)) != nullptr; }
  bool number_integer(Json::number_integer_t value) { return add(Json(value)) != nullptr; }
  bool number_unsigned(Json::number_unsigned_t value) { return add(Json(value)) != nullptr; }
  bool number_float(Json::number_float_t value, const Json::string_t&) {
    return add(Json(value)) != nullptr;
  }
  bool string(Json::string_t& value) { return add(Json(std::move(value))) != nullptr; }
  bool binary(Json::binary_t& value) { return add(Json::binary(std::move(value))) != nullptr; }
  bool start_object(std::size_t) { return open(Json::object()); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool key(Json::string_t& name) {
    if (open_.size() == 1) top_key_ = name;
    key_ = std::move(name);
    return true;
  }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t, const std::string&, const Json::exception& error) {
    syntax_error_ = error.what();
    return false;
  }

  Json& root() { return root_; }
  bool too_deep() const { return too_deep_; }
  const std::string& top_key() const { return top_key_; }
  const std::string& syntax_error() const { return syntax_error_; }

 private:
  // Places a value in the innermost open container (or as the root) and returns where it lives.
  // The pointers kept in open_ stay valid: a container only grows while it is the innermost one.
  Json* add(Json value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    Json& slot = parent[key_];  // a repeated key keeps the last value, as nlohmann's parser does
    slot = std::move(value);
    return &slot;
  }

  bool open(Json container) {
    if (static_cast<int64_t>(open_.size()) >= max_depth_) {
      too_deep_ = true;
      return false;  // ends the parse here
    }
    open_.push_back(add(std::move(container)));
    return true;
  }

  bool close() {
    open_.pop_back();
    return true;
  }

  int32_t max_depth_;
  Json root_;
  std::vector<Json*> open_;  // the containers not yet closed, outermost first
  std::string key_;
  std::string top_key_;
  bool too_deep_ = false;
  std::string syntax_error_;
};

}  // namespace

std::variant<nlohmann::json, ApiError> parse_request_json(std::string_view body,
                                                          int32_t max_depth) {
  BoundedDomBuilder builder(max_depth);
  if (Json::sax_parse(body.begin(), body.end(), &builder)) return std::move(builder.root());
  if (builder.too_deep()) {
    return ApiError::bad_request(
        cat("the request body nests arrays and objects more than ", max_depth, " levels deep",
            builder.top_key().empty() ? std::string() : cat(" (under '", builder.top_key(), "')")),
        builder.top_key());
  }
  // nlohmann's message starts with its own tag, "[json.exception.parse_error.101] ".
  std::string detail = builder.syntax_error();
  if (const size_t tag_end = detail.find("] "); detail.starts_with("[") && tag_end != detail.npos)
    detail.erase(0, tag_end + 2);
  return ApiError::bad_request(detail.empty()
                                   ? "the request body is not valid JSON"
                                   : cat("the request body is not valid JSON: ", detail));
}

}  // namespace tidal
