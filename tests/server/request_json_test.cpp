// Depth-bounded parsing of request bodies: the same value as nlohmann's parser within the limit,
// a 400 naming the top-level field past it, and no recursion over inputs nested 100,000 deep.
#include "server/request_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace tidal {
namespace {

using ::testing::HasSubstr;

std::string nested(const std::string& open, const std::string& close, size_t depth,
                   const std::string& inner = "1") {
  std::string text;
  text.reserve(depth * (open.size() + close.size()) + inner.size());
  for (size_t i = 0; i < depth; ++i) text += open;
  text += inner;
  for (size_t i = 0; i < depth; ++i) text += close;
  return text;
}

nlohmann::json parsed_ok(const std::string& body, int32_t max_depth = 64) {
  auto parsed = parse_request_json(body, max_depth);
  if (auto* error = std::get_if<ApiError>(&parsed)) {
    ADD_FAILURE() << "unexpected error: " << error->message;
    return {};
  }
  return std::get<nlohmann::json>(parsed);
}

ApiError parsed_error(const std::string& body, int32_t max_depth = 64) {
  auto parsed = parse_request_json(body, max_depth);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  ADD_FAILURE() << "expected an error for " << body.substr(0, 80);
  return {};
}

TEST(RequestJson, SameValueAsNlohmann) {
  const std::string body =
      R"({"model":"m","n":-3,"big":18446744073709551615,"x":1.5e3,"ok":true,"none":null,
          "list":[1,[2,{"a":"b"}],[],{}],"s":"\u00e9\n","o":{"k":{"k":[{"k":1}]}}})";
  EXPECT_EQ(parsed_ok(body), nlohmann::json::parse(body));
  EXPECT_EQ(parsed_ok("3"), 3);
  EXPECT_EQ(parsed_ok(R"("text")"), "text");
}

TEST(RequestJson, RepeatedKeyKeepsTheLast) {
  EXPECT_EQ(parsed_ok(R"({"a":[1,2],"a":{"b":3}})"), nlohmann::json::parse(R"({"a":{"b":3}})"));
}

TEST(RequestJson, DepthUpToTheLimitIsAccepted) {
  EXPECT_EQ(parsed_ok(nested("[", "]", 64)), nlohmann::json::parse(nested("[", "]", 64)));
  EXPECT_EQ(parsed_ok(R"({"a":)" + nested("[", "]", 3) + "}", 4)["a"][0][0][0], 1);
  EXPECT_EQ(parsed_ok("[]", 1), nlohmann::json::array());
  EXPECT_EQ(parsed_ok("7", 1), 7);  // a scalar has no depth
}

TEST(RequestJson, DeeperIsRefusedNamingTheField) {
  ApiError error = parsed_error(nested("[", "]", 65));
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.param, "");
  EXPECT_THAT(error.message, HasSubstr("more than 64 levels deep"));

  error = parsed_error(R"({"model":"m","stop":)" + nested("[", "]", 4) + "}", 4);
  EXPECT_EQ(error.param, "stop");
  EXPECT_THAT(error.message, HasSubstr("more than 4 levels deep (under 'stop')"));
  // The first key under which the limit was crossed, not the last key seen.
  error =
      parsed_error(R"({"a":1,"messages":[{"content":{"b":)" + nested("{\"c\":", "}", 80) + "}}]}");
  EXPECT_EQ(error.param, "messages");
}

TEST(RequestJson, HundredThousandLevelsDoNotRecurse) {
  // Each level would be a stack frame in a recursive parser, copy, dump or destructor.
  const size_t depth = 100000;
  EXPECT_EQ(parsed_error(nested("[", "]", depth)).status, 400);
  EXPECT_EQ(parsed_error(R"({"model":"m","messages":)" + nested("[", "]", depth) + "}").param,
            "messages");
  EXPECT_EQ(parsed_error(R"({"x":)" + nested("{\"a\":", "}", depth) + "}").param, "x");
  // Unclosed: refused for its depth before the parser reaches the missing brackets.
  EXPECT_EQ(parsed_error(std::string(depth, '[')).param, "");
  EXPECT_THAT(parsed_error(std::string(depth, '[')).message, HasSubstr("levels deep"));
}

TEST(RequestJson, SyntaxErrorsSayWhere) {
  for (const char* body :
       {"{not json", R"({"a":1} trailing)", "", R"({"a":})", "[1,]", "{\"a\":\"\xff\"}"}) {
    const ApiError error = parsed_error(body);
    EXPECT_EQ(error.status, 400);
    EXPECT_THAT(error.message, HasSubstr("not valid JSON: "));
    EXPECT_THAT(error.message, ::testing::Not(HasSubstr("json.exception")));
  }
}

}  // namespace
}  // namespace tidal
