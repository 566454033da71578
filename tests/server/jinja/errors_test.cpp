// Error reporting: parse errors name the construct and its line and column, runtime errors name
// the failing expression, raise_exception passes the template's message through, and
// ChatTemplate names the file it read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "server/chat_template.h"
#include "server/jinja/template.h"
#include "server/jinja/test_util.h"

namespace tidal {
namespace {

using Json = nlohmann::ordered_json;
using jinja::testing::render;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StrEq;
using ::testing::ThrowsMessage;

void parse(const std::string& source) {
  jinja::Template::parse(source);
}

TEST(JinjaParseErrors, UnsupportedTagNamesTagAndPlace) {
  EXPECT_THAT([] { parse("line one\n  {% include 'other.jinja' %}"); },
              ThrowsMessage<Error>(
                  AllOf(HasSubstr("unsupported tag 'include'"), HasSubstr("line 2, column 6"))));
  for (const char* tag : {"extends", "import", "call", "block", "do"}) {
    EXPECT_THAT([&] { parse(std::string("{% ") + tag + " x %}"); },
                ThrowsMessage<Error>(HasSubstr(std::string("unsupported tag '") + tag + "'")));
  }
  EXPECT_THAT([] { parse("{% for x in xs recursive %}{% endfor %}"); },
              ThrowsMessage<Error>(HasSubstr("recursive for loops are not supported")));
}

TEST(JinjaParseErrors, UnterminatedBlocks) {
  EXPECT_THAT(
      [] { parse("{% for x in xs %}\n{% if x %}{{ x }}{% endif %}"); },
      ThrowsMessage<Error>(AllOf(HasSubstr("unterminated 'for' block"),
                                 HasSubstr("'endfor' or 'else'"), HasSubstr("line 1, column 1"))));
  EXPECT_THAT([] { parse("a\n{% if x %}b"); },
              ThrowsMessage<Error>(
                  AllOf(HasSubstr("unterminated 'if' block"), HasSubstr("line 2, column 1"))));
  EXPECT_THAT([] { parse("{% macro m() %}"); },
              ThrowsMessage<Error>(HasSubstr("unterminated 'macro' block")));
  EXPECT_THAT([] { parse("{{ x "); },
              ThrowsMessage<Error>(HasSubstr("unterminated expression '{{'")));
  EXPECT_THAT([] { parse("{% if x "); }, ThrowsMessage<Error>(HasSubstr("unterminated block tag")));
  EXPECT_THAT([] { parse("{# no end"); },
              ThrowsMessage<Error>(HasSubstr("missing end of comment")));
  EXPECT_THAT([] { parse("{% raw %} no end"); },
              ThrowsMessage<Error>(HasSubstr("missing end of raw directive")));
  EXPECT_THAT([] { parse("{{ 'open }}"); },
              ThrowsMessage<Error>(HasSubstr("unterminated string literal")));
  EXPECT_THAT([] { parse("{% endif %}"); },
              ThrowsMessage<Error>(HasSubstr("unexpected tag 'endif'")));
  EXPECT_THAT([] { parse("{% if x %}{% endfor %}"); },
              ThrowsMessage<Error>(HasSubstr("unexpected tag 'endfor'")));
}

TEST(JinjaParseErrors, UnknownFiltersAndTests) {
  EXPECT_THAT([] { parse("{{ x\n | upper | shout }}"); },
              ThrowsMessage<Error>(
                  AllOf(HasSubstr("unknown filter 'shout'"), HasSubstr("line 2, column 12"))));
  EXPECT_THAT([] { parse("{% if x is loud %}{% endif %}"); },
              ThrowsMessage<Error>(HasSubstr("unknown test 'loud'")));
}

TEST(JinjaParseErrors, BadSyntax) {
  EXPECT_THAT([] { parse("{{ 1 + }}"); },
              ThrowsMessage<Error>(HasSubstr("unexpected end of print")));
  EXPECT_THAT([] { parse("{{ a ! b }}"); },
              ThrowsMessage<Error>(HasSubstr("unexpected character '!'")));
  EXPECT_THAT([] { parse("{{ (1 }}"); },
              ThrowsMessage<Error>(HasSubstr("unexpected '}', expected ')'")));
  EXPECT_THAT([] { parse("{% break %}"); },
              ThrowsMessage<Error>(HasSubstr("'break' outside of a loop")));
  EXPECT_THAT([] { parse("{{ f(*args) }}"); }, ThrowsMessage<Error>(HasSubstr("*args")));
  EXPECT_THAT([] { parse("{% set true = 1 %}"); },
              ThrowsMessage<Error>(HasSubstr("cannot assign")));
}

TEST(JinjaRuntimeErrors, NameTheFailingExpression) {
  EXPECT_THAT([] { render("{% set x = 1 %}\n{{ x + 'a' }}"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("line 2, column 4"), HasSubstr("'x + 'a''"),
                                         HasSubstr("unsupported operand type(s) for +"))));
  EXPECT_THAT(
      [] {
        render("{{ messages[0].content.strip() }}", {{"messages", {{{"role", "user"}}}}});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("in 'messages[0].content.strip'"),
                                 HasSubstr("'dict object' has no attribute 'content'"))));
  EXPECT_THAT([] { render("{% for x in 5 %}{% endfor %}"); },
              ThrowsMessage<Error>(HasSubstr("'int' object is not iterable")));
  EXPECT_THAT([] { render("{% set x = 1 %}{% set x.y = 2 %}"); },
              ThrowsMessage<Error>(HasSubstr("cannot assign attribute on non-namespace object")));
  EXPECT_THAT(
      [] { render("{{ [1].append(2) }}"); },
      ThrowsMessage<Error>(HasSubstr("access to attribute 'append' of 'list' object is unsafe")));
  EXPECT_THAT([] { render("{{ 1 / 0 }}"); }, ThrowsMessage<Error>(HasSubstr("division by zero")));
  EXPECT_THAT([] { render("{{ x | tojson }}"); },
              ThrowsMessage<Error>(HasSubstr("Object of type Undefined is not JSON serializable")));
}

TEST(JinjaRuntimeErrors, RaiseExceptionPassesTheMessageThrough) {
  EXPECT_THAT(
      [] { render("{% if true %}{{ raise_exception('Roles must alternate ' ~ 2) }}{% endif %}"); },
      ThrowsMessage<Error>(StrEq("Roles must alternate 2")));
  const ChatTemplate chat = ChatTemplate::from_source(
      "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
      "{% endif %}{% endfor %}",
      "", "");
  EXPECT_THAT([&] { chat.render(Json::parse(R"([{"role": "tool", "content": "x"}])"), false); },
              ThrowsMessage<Error>(StrEq("no tools here")));
}

class ChatTemplateFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tidal_chat_template_" +
            std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ChatTemplateFiles, MissingTemplateNamesTheFile) {
  write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_THAT([&] { ChatTemplate::from_model_dir(dir_.string()); },
              ThrowsMessage<Error>(
                  AllOf(HasSubstr("tokenizer_config.json"), HasSubstr("no chat_template"))));
  std::filesystem::remove(dir_ / "tokenizer_config.json");
  EXPECT_THAT([&] { ChatTemplate::from_model_dir(dir_.string()); },
              ThrowsMessage<Error>(HasSubstr("not found")));
}

TEST_F(ChatTemplateFiles, ParseErrorNamesFileConstructAndLine) {
  write("tokenizer_config.json",
        Json({{"chat_template", "{{ bos_token }}\n{% include 'x' %}"}}).dump());
  EXPECT_THAT(
      [&] { ChatTemplate::from_model_dir(dir_.string()); },
      ThrowsMessage<Error>(AllOf(HasSubstr("tokenizer_config.json"),
                                 HasSubstr("unsupported tag 'include'"), HasSubstr("line 2"))));
}

TEST_F(ChatTemplateFiles, ListOfTemplatesNeedsADefault) {
  write("tokenizer_config.json",
        Json({{"chat_template", {{{"name", "rag"}, {"template", "x"}}}}}).dump());
  EXPECT_THAT([&] { ChatTemplate::from_model_dir(dir_.string()); },
              ThrowsMessage<Error>(HasSubstr("none is named \"default\"")));
}

TEST_F(ChatTemplateFiles, ChatTemplateJinjaTakesPriority) {
  write("tokenizer_config.json", Json({{"chat_template", "from config"},
                                       {"bos_token", {{"content", "<s>"}}},
                                       {"eos_token", nullptr}})
                                     .dump());
  write("chat_template.jinja", "from file {{ bos_token }} {{ eos_token is defined }}\n");
  const ChatTemplate chat = ChatTemplate::from_model_dir(dir_.string());
  EXPECT_EQ(chat.render(Json::array(), false), "from file <s> False");
}

}  // namespace
}  // namespace tidal
