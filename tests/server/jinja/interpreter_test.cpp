// Unit tests of the Jinja interpreter: expressions, filters, tests, statements, scoping,
// whitespace handling and undefined values, each checked against what Python's Jinja renders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "server/jinja/template.h"
#include "server/jinja/test_util.h"

namespace tidal::jinja {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;
using testing::render;

TEST(JinjaExpressions, ArithmeticFollowsPython) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }}"),
            "7 9 3 -4 2");
  EXPECT_EQ(render("{{ 1 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 % 2 }}"),
            "0.5 2.0 1024 0.5 1.5");
  // Jinja's ** is left-associative and binds tighter than unary minus' operand only.
  EXPECT_EQ(render("{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }}"), "64 4");
  EXPECT_EQ(render("{{ true + 1 }} {{ 'ab' * 2 }} {{ [0] * 3 }} {{ 'a' + 'b' }} {{ [1] + [2] }}"),
            "2 abab [0, 0, 0] ab [1, 2]");
  EXPECT_EQ(render("{{ 1 ~ 2 ~ none ~ true }}"), "12NoneTrue");
}

TEST(JinjaExpressions, PrintsValuesLikePythonStr) {
  EXPECT_EQ(render("{{ none }} {{ true }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }}"),
            "None True 1.0 0.30000000000000004 1e+16 1e-05");
  EXPECT_EQ(render("{{ [1, 'a', none, {'k': (1,)}] }}"), "[1, 'a', None, {'k': (1,)}]");
  EXPECT_EQ(render("{{ [\"it's\"] }}"), "[\"it's\"]");
}

TEST(JinjaExpressions, ComparisonsChainAndLogicReturnOperands) {
  EXPECT_EQ(render("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ [1, 2] < [1, 3] }}"),
            "True False True True");
  EXPECT_EQ(render("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 1 }}|{{ not 1 == 2 }}"), "x y |True");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"),
            "True True True True");
  EXPECT_EQ(render("{{ 'y' if x else 'n' }} {{ 'y' if 1 }}|{{ 1 if 0 else 2 if 0 else 3 }}"),
            "n y|3");
}

TEST(JinjaExpressions, AttributeAndItemAccessFallBackToEachOther) {
  const Json data = {{"d", {{"a", 1}, {"items", "a key named items"}}},
                     {"xs", {10, 20, 30}},
                     {"nested", {{"a", {{"b", Json::array({1, {{"c", "deep"}}})}}}}}};
  EXPECT_EQ(render("{{ d.a }} {{ d['a'] }} {{ xs.1 }} {{ xs[-1] }} {{ nested.a.b[1].c }}", data),
            "1 1 20 30 deep");
  // A dict's methods shadow its keys under `.`, while `[...]` prefers the key.
  EXPECT_EQ(render("{{ d['items'] }}|{{ d.items() | list }}", data),
            "a key named items|[('a', 1), ('items', 'a key named items')]");
  EXPECT_EQ(render("{{ d.missing }}|{{ xs[10] }}|{{ none.x }}|{{ 'abc'['upper']() }}", data),
            "|||ABC");
}

TEST(JinjaExpressions, SlicingWithNegativeSteps) {
  const Json data = {{"xs", {1, 2, 3, 4, 5}}, {"u", "añ日👋"}};
  EXPECT_EQ(
      render("{{ xs[::-1] }} {{ xs[::-2] }} {{ xs[-2::-1] }} {{ xs[3:0:-1] }} {{ xs[1:3] }}", data),
      "[5, 4, 3, 2, 1] [5, 3, 1] [4, 3, 2, 1] [4, 3, 2] [2, 3]");
  EXPECT_EQ(render("{{ xs[-100:100] }} {{ xs[5:] }} {{ xs[1:2:-1] }}", data),
            "[1, 2, 3, 4, 5] [] []");
  // Strings slice by code point, not byte.
  EXPECT_EQ(render("{{ u[::-1] }} {{ u[1:3] }} {{ u[-1] }} {{ u | length }}", data),
            "👋日ña ñ日 👋 4");
  EXPECT_THAT([&] { render("{{ xs[::0] }}", data); },
              ::testing::ThrowsMessage<Error>(HasSubstr("slice step cannot be zero")));
}

TEST(JinjaExpressions, StringMethods) {
  EXPECT_EQ(render("{{ '  x  '.strip() }}|{{ '\\n\\nx'.lstrip('\\n') }}|{{ 'xyy'.rstrip('y') }}"),
            "x|x|x");
  EXPECT_EQ(render("{{ 'a</think>b'.split('</think>')[-1] }} {{ ' a  b '.split() }} "
                   "{{ 'a,b,c'.rsplit(',', 1) }}"),
            "b ['a', 'b'] ['a,b', 'c']");
  EXPECT_EQ(
      render("{{ 'Hi'.startswith('H') }} {{ 'Hi'.endswith(('x', 'i')) }} "
             "{{ 'hello world'.title() }} {{ 'a-b'.replace('-', '+') }} {{ 'abc'.find('c') }}"),
      "True True Hello World a+b 2");
  EXPECT_EQ(render("{{ '{}-{x}'.format(1, x=2) }} {{ ', '.join(['a', 'b']) }}"), "1-2 a, b");
}

TEST(JinjaFilters, CommonFilters) {
  const Json data = {{"xs", {3, 1, 2}},
                     {"msgs",
                      {{{"role", "user"}, {"content", "a"}},
                       {{"role", "assistant"}, {"content", "b"}},
                       {{"role", "user"}, {"content", "c"}}}}};
  EXPECT_EQ(render("{{ xs | length }} {{ xs | first }} {{ xs | last }} {{ xs | sort }} "
                   "{{ xs | reverse | list }} {{ xs | sum }} {{ xs | min }} {{ xs | max }}",
                   data),
            "3 3 2 [1, 2, 3] [2, 1, 3] 6 1 3");
  EXPECT_EQ(render("{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | "
                   "join(',') }} {{ msgs | rejectattr('role', 'eq', 'user') | list | length }}",
                   data),
            "a,c 1");
  EXPECT_EQ(
      render("{{ ' x ' | trim }}|{{ 'ab' | upper }}|{{ 'hello wORLD-x' | title }}|"
             "{{ 'a-b' | replace('-', '') }}|{{ x | default('d') }}|{{ '' | default('d', true) }}"),
      "x|AB|Hello World-X|ab|d|d");
  EXPECT_EQ(render("{{ '42' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '1.5' | float }} "
                   "{{ 5 | string }}{{ 'ab' | list }} {{ 2.5 | round }} {{ -3 | abs }}"),
            "42 7 3 1.5 5['a', 'b'] 2.0 3");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2} | dictsort }} {{ {'a': 1} | items | list }} "
                   "{{ ['a', 'A', 'b'] | unique | list }} {{ [1, 2, 3] | select('odd') | list }}"),
            "[('a', 2), ('b', 1)] [('a', 1)] ['a', 'b'] [1, 3]");
  EXPECT_EQ(
      render("{{ 'a\\nb' | indent(2, true) }}|{{ '%s=%d' | format('x', 1) }}|{{ '<&>' | e }}"),
      "  a\n  b|x=1|&lt;&amp;&gt;");
}

TEST(JinjaFilters, ToJsonMatchesTransformers) {
  const Json data = {
      {"obj", {{"name", "x"}, {"args", {{"b", 1}, {"a", {1.5, nullptr, true, "é\"\n"}}}}}}};
  // Key order is kept and non-ASCII is not escaped (ensure_ascii=False), with ", " / ": ".
  EXPECT_EQ(render("{{ obj | tojson }}", data),
            "{\"name\": \"x\", \"args\": {\"b\": 1, \"a\": [1.5, null, true, \"é\\\"\\n\"]}}");
  EXPECT_EQ(render("{{ obj.args | tojson(indent=2) }}", data),
            "{\n  \"b\": 1,\n  \"a\": [\n    1.5,\n    null,\n    true,\n    \"é\\\"\\n\"\n  ]\n}");
  EXPECT_EQ(render("{{ obj.args | tojson(sort_keys=true, separators=(',', ':')) }}", data),
            "{\"a\":[1.5,null,true,\"é\\\"\\n\"],\"b\":1}");
  EXPECT_EQ(render("{{ 'é😀' | tojson(ensure_ascii=true) }} {{ [] | tojson(indent=4) }}"),
            "\"\\u00e9\\ud83d\\ude00\" []");
}

TEST(JinjaTests, TypeAndValueTests) {
  EXPECT_EQ(
      render("{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 0 is not none }} "
             "{{ 'a' is string }} {{ 1 is number }} {{ true is boolean }} {{ true is integer }}"),
      "False True True True True True True False");
  EXPECT_EQ(render("{{ {} is mapping }} {{ [] is iterable }} {{ 4 is divisibleby 2 }} "
                   "{{ 3 is odd }} {{ 2 is in [1, 2] }} {{ 1 is eq 1 }} {{ false is false }}"),
            "True True True True True True True");
}

TEST(JinjaStatements, LoopVariables) {
  EXPECT_EQ(
      render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
             "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}"),
      "1032TrueFalse3 2121FalseFalse3 3210FalseTrue3 ");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{{ loop.previtem | default('-') }}{{ x }}"
                   "{{ loop.nextitem | default('-') }}{{ loop.cycle('a', 'b') }} {% endfor %}"),
            "-12a 123b 23-a ");
  EXPECT_EQ(render("{% for x in [1, 1, 2] %}{{ loop.changed(x) }}{% endfor %}"), "TrueFalseTrue");
}

TEST(JinjaStatements, LoopFilterElseBreakContinue) {
  EXPECT_EQ(render("{% for x in [1, 5, 2, 7] if x > 1 %}{{ loop.index }}/{{ loop.length }}:{{ x }} "
                   "{% else %}none{% endfor %}"),
            "1/3:5 2/3:2 3/3:7 ");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}"
                   "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %}"
                   "{% for (a, b) in [[1, 2]] %}{{ b }}{{ a }}{% endfor %}"),
            "a1b221");
}

TEST(JinjaStatements, SetInsideLoopDoesNotLeakButNamespaceDoes) {
  EXPECT_EQ(
      render("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}"),
      "1110");
  EXPECT_EQ(render("{% set ns = namespace(total=0) %}{% for i in range(4) %}"
                   "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}"),
            "6");
  EXPECT_EQ(
      render("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c is defined }}"),
      "12False");
}

TEST(JinjaStatements, SetForms) {
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 2 %}{{ t }}"), "12 (1, 2)");
  EXPECT_EQ(render("{% set x %}in {{ 1 + 1 }} block{% endset %}[{{ x }}]"), "[in 2 block]");
  EXPECT_EQ(render("{% set y | upper | trim %}  loud  {% endset %}[{{ y }}]"), "[LOUD]");
  EXPECT_EQ(render("{% with a = 1 %}{{ a }}{% endwith %}{{ a is defined }}"), "1False");
  EXPECT_EQ(render("{% filter upper %}a{{ 'b' }}{% endfilter %}"), "AB");
}

TEST(JinjaStatements, MacrosWithDefaultsKeywordsAndRecursion) {
  EXPECT_EQ(
      render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
             "{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet() }}"),
      "Hello, Ann! Hi, Bob! Hello, !");
  EXPECT_EQ(render("{% macro f(n) %}{% if n <= 1 %}1{% else %}{{ n * (f(n - 1) | int) }}{% endif %}"
                   "{% endmacro %}{{ f(5) }}"),
            "120");
  EXPECT_EQ(render("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, k=2) }}"),
            "(1,){'k': 2}");
  // Macros see the template's variables as they are when called.
  EXPECT_EQ(render("{% set g = 1 %}{% macro show() %}{{ g }}{% endmacro %}{{ show() }}"
                   "{% set g = 2 %}{{ show() }}"),
            "12");
}

TEST(JinjaWhitespace, ExplicitControl) {
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("x\n  {{- 'y' -}}  \n  z"), "xyz");
  EXPECT_EQ(render("  {%+ if true %}kept{% endif %}"), "  kept");
  EXPECT_EQ(render("{% if true +%}\nkept newline{% endif %}"), "\nkept newline");
}

TEST(JinjaWhitespace, TrimAndLstripBlocksAsTransformersSetsThem) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(render("a\n  {% if true %}\n    b\n  {% endif %}\nc"), "a\n    b\nc");
  EXPECT_EQ(render("line\n    {# comment #}\nnext"), "line\nnext");
  // Expressions are not block tags: their surroundings stay.
  EXPECT_EQ(render("  {{ 'x' }}\n"), "  x");
  // With both settings off, every space and newline around tags is kept.
  LexerOptions off;
  off.trim_blocks = false;
  off.lstrip_blocks = false;
  EXPECT_EQ(
      Template::parse("a\n  {% if true %}\n    b\n  {% endif %}\nc", off).render(Json::object()),
      "a\n  \n    b\n  \nc");
}

TEST(JinjaWhitespace, NewlinesAreNormalizedAndOneTrailingNewlineDropped) {
  EXPECT_EQ(render("a\r\nb\rc\n"), "a\nb\nc");
  EXPECT_EQ(render("a\n\n"), "a\n");
}

TEST(JinjaSyntax, RawBlocksAndComments) {
  EXPECT_EQ(render("{% raw %}{{ x }}{% if %}{% endraw %}|{# {{ hidden }} #}|"),
            "{{ x }}{% if %}||");
  EXPECT_EQ(render("{{ 'a' 'b' }} {{ 1_000 }} {{ 0x1f }} {{ '\\u00e9\\x41\\n' }}"),
            "ab 1000 31 éA\n");
}

TEST(JinjaUndefined, BehavesLikeJinjaDefaultUndefined) {
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{{ missing is defined }} {{ missing | length }} {{ missing ~ 'x' }} "
                   "{% if missing %}t{% else %}f{% endif %} {{ 'a' in missing }} "
                   "{% for x in missing %}x{% else %}none{% endfor %} {{ missing == missing }}"),
            "False 0 x f False none True");
  EXPECT_EQ(render("{{ missing | default('d') }} {{ {}.key is defined }} {{ missing | list }}"),
            "d False []");
  // Using an undefined value for more than that fails, naming it.
  EXPECT_THAT([] { render("{{ missing.attr }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'missing' is undefined")));
  EXPECT_THAT([] { render("{{ missing + 1 }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'missing' is undefined")));
  EXPECT_THAT([] { render("{{ {}.key.strip() }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'dict object' has no attribute 'key'")));
}

TEST(JinjaGlobals, RangeDictStrftime) {
  EXPECT_EQ(render("{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1) }}"),
            "[0, 1, 2] [1, 3, 5] {'a': 1}");
  RenderOptions options;
  options.clock = [] { return std::time_t{1721995200}; };  // 2024-07-26T12:00:00Z
  EXPECT_EQ(render("{{ strftime_now('%Y') }}", Json::object(), options), "2024");
}

TEST(JinjaLimits, RunawayTemplatesStopWithAnError) {
  RenderOptions options;
  options.limits.max_steps = 100000;
  EXPECT_THAT(
      [&] {
        render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
               Json::object(), options);
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("too much work")));
  options = {};
  options.limits.max_output_bytes = 1000;
  EXPECT_THAT(
      [&] {
        render("{% for i in range(100) %}0123456789abcdef{% endfor %}", Json::object(), options);
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("limit of 1000 bytes")));
  EXPECT_THAT([&] { render("{{ 'x' * 100000 }}", Json::object(), options); },
              ::testing::ThrowsMessage<Error>(HasSubstr("limit of 1000 bytes")));
  EXPECT_THAT([] { render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("recursion deeper than")));
  EXPECT_THAT([] { render("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("nested deeper than")));
  EXPECT_THAT([] { render("{{ range(1000000) | length }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("Range too big")));
  // Namespaces may refer to themselves; printing one must not recurse forever.
  EXPECT_THAT([] { render("{% set ns = namespace() %}{% set ns.self = ns %}{{ ns }}"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("nested too deeply")));
}

}  // namespace
}  // namespace tidal::jinja
