// Every reference render written by tools/make_chat_template_expectations.py (transformers for the
// Qwen3 templates, plain jinja2 for the hand-written ones and the snippets) must come out of tidal
// byte for byte, and every conversation the reference refused must be refused here too.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/error.h"
#include "server/chat_template.h"
#include "server/jinja/template.h"

namespace tidal {
namespace {

using Json = nlohmann::ordered_json;

// The fixed time the reference strftime_now saw (CLOCK in the script).
constexpr std::time_t kClock = 1721995200;

const std::filesystem::path kFixtures =
    std::filesystem::path(TIDAL_SOURCE_DIR) / "tests" / "fixtures" / "chat_templates";

Json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  return Json::parse(text.str());
}

struct TemplateCase {
  std::string name;       // <name>.expected.json
  std::string model_dir;  // passed to ChatTemplate::from_model_dir

  friend void PrintTo(const TemplateCase& c, std::ostream* out) { *out << c.name; }
};

class ChatTemplateExpectations : public ::testing::TestWithParam<TemplateCase> {};

TEST_P(ChatTemplateExpectations, RendersLikeTheReference) {
  const TemplateCase& param = GetParam();
  ChatTemplate chat = ChatTemplate::from_model_dir(param.model_dir);
  chat.set_clock([] { return kClock; });
  const Json cases = read_json(kFixtures / (param.name + ".expected.json"));
  ASSERT_GE(cases.size(), 5u);
  size_t index = 0;
  for (const Json& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << param.name << " case " << index++ << ": " << c["messages"].dump());
    const bool add_generation_prompt = c["add_generation_prompt"].get<bool>();
    if (c.contains("error")) {
      EXPECT_THROW(chat.render(c["messages"], add_generation_prompt, c["extra"]), Error)
          << "the reference failed with " << c["error"];
      continue;
    }
    try {
      EXPECT_EQ(chat.render(c["messages"], add_generation_prompt, c["extra"]),
                c["rendered"].get<std::string>());
    } catch (const Error& error) {
      ADD_FAILURE() << "threw: " << error.what();
    }
  }
}

std::string fixture_dir(const std::string& name) {
  return (kFixtures / name).string();
}

INSTANTIATE_TEST_SUITE_P(
    All, ChatTemplateExpectations,
    ::testing::Values(TemplateCase{"qwen3", fixture_dir("qwen3")},
                      TemplateCase{"fixture", std::string(TIDAL_SOURCE_DIR) +
                                                  "/tests/fixtures/tiny-qwen3-moe"},
                      TemplateCase{"llama3_style", fixture_dir("llama3_style")},
                      TemplateCase{"mistral_style", fixture_dir("mistral_style")},
                      TemplateCase{"macros_and_filters", fixture_dir("macros_and_filters")},
                      TemplateCase{"deepseek_style", fixture_dir("deepseek_style")}),
    [](const ::testing::TestParamInfo<TemplateCase>& test) { return test.param.name; });

TEST(ChatTemplateExpectations, QwenCasesCoverTheBrief) {
  // At least 15 transformers renders per Qwen3 template, some of them refusals.
  for (const char* name : {"qwen3", "fixture"}) {
    const Json cases = read_json(kFixtures / (std::string(name) + ".expected.json"));
    EXPECT_GE(cases.size(), 15u) << name;
  }
}

TEST(JinjaSnippets, RenderLikeJinja2) {
  const Json document = read_json(kFixtures / "snippets.expected.json");
  const Json& context = document["context"];
  const Json& snippets = document["cases"];
  ASSERT_GE(snippets.size(), 50u);
  jinja::RenderOptions options;
  options.clock = [] { return kClock; };
  for (const Json& s : snippets) {
    const std::string source = s["template"].get<std::string>();
    SCOPED_TRACE(source);
    if (s.contains("error")) {
      EXPECT_THROW(jinja::Template::parse(source).render(context, options), Error)
          << "jinja2 failed with " << s["error"];
      continue;
    }
    try {
      EXPECT_EQ(jinja::Template::parse(source).render(context, options),
                s["rendered"].get<std::string>());
    } catch (const Error& error) {
      ADD_FAILURE() << "threw: " << error.what();
    }
  }
}

}  // namespace
}  // namespace tidal
