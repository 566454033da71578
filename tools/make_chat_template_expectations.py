#!/usr/bin/env python3
"""Writes the reference renders that tests/server/jinja compares tidal's chat templates against.

For each template directory under tests/fixtures/chat_templates/ (and the fixture model's) it
writes tests/fixtures/chat_templates/<name>.expected.json: a list of
  {"messages", "add_generation_prompt", "extra", "rendered"}
or, where the template refuses the conversation, "error" (Python's message) instead of "rendered".

- qwen3 (Qwen3's tokenizer_config.json, copied from /work/shared/tokenizers/qwen3) and fixture
  (tests/fixtures/tiny-qwen3-moe) are rendered by transformers' own
  tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=..., **extra).
- The hand-written templates (llama3_style, mistral_style, macros_and_filters, deepseek_style) are
  rendered by plain jinja2 in the environment transformers builds (trim_blocks, lstrip_blocks,
  loopcontrols, its tojson filter and its raise_exception and strftime_now globals), after the
  same message preprocessing transformers does. strftime_now reads a fixed clock, CLOCK below,
  which the C++ test uses too.

It also writes snippets.expected.json: small templates (SNIPPETS) rendered by the same plain jinja2
environment with the variables in DATA, as {"context": DATA, "cases": [{"template", "rendered"} or
{"template", "error"}, ...]}, which pin down the interpreter's semantics one construct at a time.

Run with a Python that has transformers (5.x) and jinja2, from anywhere:
  /opt/fixenv/bin/python tools/make_chat_template_expectations.py
"""

import copy
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "chat_templates"
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "tiny-qwen3-moe"

# 2024-07-26 12:00:00 UTC: midday, so "%d %b %Y" is the same date in every time zone within
# +-11 hours. Must equal kClock in tests/server/jinja/chat_template_expectations_test.cpp.
CLOCK = 1721995200

# ---- conversations ----

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.\nReturns the top results.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query", "limit"],
        },
    },
}


def tool_call(name, arguments, call_id="call_1"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


USER = {"role": "user", "content": "What is the capital of France?"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

QWEN_CASES = [
    ([USER], True, {}),
    ([USER], False, {}),
    ([SYSTEM, USER], True, {}),
    ([SYSTEM, USER, {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "And of Italy?"}], True, {}),
    ([SYSTEM, USER, {"role": "assistant", "content": "Paris."}], False, {}),
    ([USER], True, {"enable_thinking": False}),
    ([USER], True, {"enable_thinking": True}),
    ([SYSTEM, USER, {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "Thanks!"}], True, {"enable_thinking": False}),
    # Reasoning in an earlier turn is dropped; in the last assistant turn it is kept.
    ([USER, {"role": "assistant", "content": "<think>\nThe user asks about France.\n</think>\n\nParis."},
      {"role": "user", "content": "And Spain?"}], True, {}),
    ([USER, {"role": "assistant", "content": "<think>\nEasy one.\n</think>\n\nParis."}], False, {}),
    ([USER, {"role": "assistant", "content": "Paris.", "reasoning_content": "Capital of France."}],
     False, {}),
    ([USER, {"role": "assistant", "content": "Paris.", "reasoning_content": "Capital of France."},
      {"role": "user", "content": "Sure?"}], True, {}),
    ([USER, {"role": "assistant", "content": "Paris.", "reasoning": "Old field name."}], False, {}),
    ([USER, {"role": "assistant", "content": "Paris.", "thinking": "Another name.",
             "reasoning_content": None}], False, {}),
    ([USER, {"role": "assistant", "content": "Paris.", "thinking": "Loses.",
             "reasoning_content": "Wins."}], False, {}),
    ([{"role": "user", "content": "Weather in Zürich?"}], True, {"tools": [WEATHER_TOOL]}),
    ([SYSTEM, {"role": "user", "content": "Weather in Zürich?"}], True,
     {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ([{"role": "user", "content": "Weather in Zürich?"},
      {"role": "assistant", "content": "",
       "tool_calls": [tool_call("get_weather", {"city": "Zürich", "unit": "celsius"})]},
      {"role": "tool", "content": "{\"temperature\": 21}", "tool_call_id": "call_1"},
      {"role": "assistant", "content": "It is 21 °C in Zürich."}], False, {"tools": [WEATHER_TOOL]}),
    # Multi-step tool use: two calls in one turn, consecutive tool results, a second round.
    ([SYSTEM, {"role": "user", "content": "Compare Paris and Rome weather, then search."},
      {"role": "assistant", "content": "<think>\nNeed both cities.\n</think>\n\nLet me check.",
       "tool_calls": [tool_call("get_weather", {"city": "Paris"}, "a"),
                      tool_call("get_weather", {"city": "Rome"}, "b")]},
      {"role": "tool", "content": "{\"temperature\": 18}"},
      {"role": "tool", "content": "{\"temperature\": 25}"},
      {"role": "assistant", "content": "",
       "tool_calls": [tool_call("search", "{\"query\": \"rome heat\", \"limit\": 3}", "c")]},
      {"role": "tool", "content": "[\"result one\"]"}], True, {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    # A tool call without the "function" wrapper, and arguments given as a JSON string.
    ([USER, {"role": "assistant", "content": "",
             "tool_calls": [{"name": "search", "arguments": "{\"query\": \"x\"}"}]},
      {"role": "tool", "content": "ok"}], True, {"tools": [SEARCH_TOOL]}),
    # content=None is dropped before rendering, like any null-valued key.
    ([USER, {"role": "assistant", "content": "Checking.", "tool_calls": None, "name": None}], False, {}),
    # A user turn that is itself a tool response does not count as the last query.
    ([USER, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nOne moment."},
      {"role": "user", "content": "<tool_response>\n42\n</tool_response>"},
      {"role": "assistant", "content": "<think>\nGot 42.\n</think>\n\nThe answer is 42."}], False, {}),
    ([{"role": "user", "content": "Übersetze: 你好，世界 👋🏽 — مرحبا é\u0301"},
      {"role": "assistant", "content": "Hallo, Welt 👋🏽"}], True, {}),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": ""},
      {"role": "user", "content": "   "}], True, {}),
    ([SYSTEM, {"role": "system", "content": "A second system message."}, USER], True, {}),
    ([USER, {"role": "assistant", "content": "Paris.\n\n"}, {"role": "user", "content": "ok"}], True,
     {"enable_thinking": False, "unused_variable": [1, 2, 3]}),
    # An assistant turn with no content at all fails inside the template (content is undefined).
    ([USER, {"role": "assistant", "content": None,
             "tool_calls": [tool_call("get_weather", {"city": "Paris"})]}], False, {}),
]

LLAMA_CASES = [
    ([USER], True, {}),
    ([SYSTEM, USER, {"role": "assistant", "content": "  Paris.  "}], False, {}),
    ([SYSTEM, USER], True, {"date_string": "01 Jan 2025"}),
    ([{"role": "user", "content": "Weather in Zürich?"}], True, {"tools": [WEATHER_TOOL]}),
    ([{"role": "user", "content": "Weather in Zürich?"}], True,
     {"tools": [WEATHER_TOOL], "tools_in_user_message": False}),
    ([{"role": "user", "content": "Weather?"},
      {"role": "assistant", "tool_calls": [tool_call("get_weather", {"city": "Oslo"})]},
      {"role": "tool", "content": {"temperature": 3, "sky": "grey"}},
      {"role": "ipython", "content": "plain text result"},
      {"role": "assistant", "content": "3 °C and grey."}], True, {"tools": [WEATHER_TOOL]}),
    ([USER, {"role": "assistant", "tool_calls": [tool_call("a", {}), tool_call("b", {})]}], False, {}),
    ([SYSTEM], True, {"tools": []}),
]

MISTRAL_CASES = [
    ([USER], True, {}),
    ([SYSTEM, USER, {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "And Italy?"}], True, {}),
    ([USER, {"role": "assistant", "content": "Paris."}], False, {}),
    ([USER, USER], True, {}),
    ([{"role": "assistant", "content": "Hello"}], True, {}),
    ([USER, {"role": "tool", "content": "x"}], True, {}),
]

MACROS_CASES = [
    ([USER], True, {}),
    ([SYSTEM, USER, {"role": "assistant", "content": "  Paris.  "}], False, {}),
    ([{"role": "user", "content": [{"type": "text", "text": "Describe:"},
                                   {"type": "image", "url": "http://x/y.png"},
                                   {"type": "text", "text": "briefly"}]},
      {"role": "assistant", "content": [{"type": "image"}]}], True, {}),
    ([USER], True, {"tools": [WEATHER_TOOL, SEARCH_TOOL,
                              {"type": "function", "function": {"name": "noop", "description": "",
                                                                "parameters": {}}}]}),
    ([USER, {"role": "assistant", "content": "Paris."}, USER, {"role": "assistant", "content": "Paris!"}],
     False, {}),
]

DEEPSEEK_CASES = [
    ([USER], True, {}),
    ([SYSTEM, {"role": "system", "content": "Be brief."}, USER,
      {"role": "assistant", "content": "<think>France.</think>Paris."},
      {"role": "user", "content": "Italy?"}], True, {}),
    ([USER, {"role": "assistant", "content": None,
             "tool_calls": [tool_call("get_weather", {"city": "Paris"}),
                            tool_call("search", "{\"query\": \"paris\"}")]},
      {"role": "tool", "content": "18"}, {"role": "tool", "content": "[]"},
      {"role": "assistant", "content": "18 degrees."}], True, {}),
    ([USER, {"role": "assistant", "content": "", "tool_calls": [tool_call("search", "{}")]},
      {"role": "tool", "content": "none"}], True, {}),
    # With tools, transformers picks the template named "tool_use".
    ([SYSTEM, USER, {"role": "assistant", "content": None}], True, {"tools": [WEATHER_TOOL]}),
]

# ---- snippets: (template, context) ----

DATA = {
    "xs": [3, 1, 2],
    "words": ["b", "A", "c", "a"],
    "d": {"b": 1, "a": 2, "items": "key named items"},
    "msgs": [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}],
    "s": "  Hello, World!  ",
    "n": None,
    "t": True,
    "f": 1.5,
    "i": 7,
    "u": "Grüße 👋 日本",
    "nested": {"a": {"b": [10, 20, {"c": "deep"}]}},
    "empty": [],
    "obj": {"name": "x", "args": {"k": [1, 2.5, None, True, "é\"\\\n"]}},
}

SNIPPETS = [
    # output of each type, Python's str()
    "{{ 1 }}|{{ -3 }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ 1e-5 }}|{{ 123456789012345.678 }}|{{ 2.5e-3 }}",
    "{{ none }}|{{ true }}|{{ false }}|{{ True }}|{{ None }}|{{ n }}|{{ t }}",
    "{{ [1, 'a', none, true, 1.5, {'k': [2]}] }}|{{ (1,) }}|{{ () }}|{{ (1, 'b') }}",
    "{{ \"it's\" }}|{{ [\"it's\", 'a\"b', 'x\\ny', 'tab\\t', 'both\\'\"', '\\x01', 'é', '\\u200b', '\\xa0'] }}",
    "{{ d }}|{{ nested }}|{{ obj }}",
    "{{ undefined_name }}|{{ d.missing }}|{{ xs[10] }}|{{ [undefined_name] }}",
    # arithmetic
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 / 4 }} {{ 4 / 2 }}",
    "{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }} {{ 2.0 ** 0.5 }} {{ -2 ** 2 }} {{ (-2) ** 2 }}",
    "{{ 1 + 2 * 3 - 4 / 2 }} {{ (1 + 2) * 3 }} {{ true + 1 }} {{ 3 * 'ab' }} {{ 'ab' * 2 }} {{ [1] * 3 }} {{ 'x' * 0 }}",
    "{{ 'a' + 'b' }} {{ [1] + [2, 3] }} {{ 1 ~ 2 ~ 'x' ~ none ~ true }} {{ 'a' ~ undefined_name ~ 'b' }}",
    "{{ '%s and %s' % ('a', 'b') }} {{ '%d%%' % 50 }} {{ '%5.2f|%-4s|%04d' % (3.14159, 'ab', 7) }} {{ '%(x)s!' % {'x': 1} }} {{ '%r' % 'q' }}",
    "{{ 1 +\n 2 }}",
    # comparisons and logic
    "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 != 2 }} {{ 2 >= 2 }}",
    "{{ 'b' in 'abc' }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ 4 not in xs }} {{ 'x' in undefined_name }}",
    "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ none or [] }} {{ '' and 1 }} {{ not 0 }} {{ not not 'a' }} {{ not 1 == 2 }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if n else 'no' }} {{ 'a' if false }}|{{ 1 if 0 else 2 if 0 else 3 }}",
    # tests
    "{{ x is defined }} {{ n is defined }} {{ d.b is defined }} {{ d.zz is undefined }} {{ n is none }} {{ 0 is not none }}",
    "{{ 'a' is string }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ true is boolean }} {{ true is number }}",
    "{{ d is mapping }} {{ xs is iterable }} {{ 'ab' is iterable }} {{ 1 is iterable }} {{ xs is sequence }} {{ range is callable }}",
    "{{ 4 is divisibleby 2 }} {{ 5 is divisibleby(2) }} {{ 3 is odd }} {{ 4 is even }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 'Ab' is lower }}",
    "{{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is gt 1 }} {{ 1 is le 1 }} {{ 1 is ge 2 }} {{ 1 is sameas 1 }} {{ none is sameas none }}",
    "{{ 2 is in xs }} {{ 'q' is in 'abc' }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 'upper' is filter }} {{ 'odd' is test }}",
    "{{ x is defined and x.y }}|{{ n is none or n.y }}",
    # attribute and item access
    "{{ d.a }} {{ d['a'] }} {{ d.items is defined }} {{ d['items'] }} {{ nested.a.b[2].c }} {{ nested['a']['b'][-1]['c'] }} {{ xs.0 }} {{ xs[-1] }}",
    "{{ 'hello'[1] }} {{ 'hello'[-1] }} {{ u[6] }} {{ u[-1] }} {{ 'abc'['upper']() }} {{ n.attr }}|{{ (1, 2)[1] }}",
    # slicing
    "{{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::2] }} {{ xs[-2::-1] }} {{ xs[5:] }} {{ xs[1:2:-1] }} {{ xs[-100:100] }}",
    "{{ 'abcdef'[::-2] }} {{ 'abcdef'[1:4] }} {{ u[::-1] }} {{ u[2:5] }} {{ 'abc'[10:] }} {{ (1, 2, 3)[::-1] }}",
    "{% for m in msgs[::-1] %}{{ loop.index0 }}{{ m.role[0] }} {% endfor %}",
    # string methods
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\nhi\\n'.lstrip('\\n') }}|{{ 'abc'.rstrip('cb') }}",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'a b  c  '.split(none, 2) }} {{ '  a b c'.rsplit(none, 1) }} {{ ''.split() }} {{ ''.split(',') }}",
    "{{ 'x</think>y</think>z'.split('</think>')[-1] }}|{{ 'x</think>y'.split('</think>')[0].rstrip('\\n').split('<think>')[-1] }}",
    "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith('lo') }} {{ 'Hello'.startswith(('x', 'H')) }} {{ 'Hello'.startswith('l', 2) }} {{ 'Hello'.endswith('l', 0, 4) }}",
    "{{ 'hello world'.title() }} {{ \"they're bill's\".title() }} {{ 'hELLO'.capitalize() }} {{ 'ab'.upper() }} {{ 'ÄB'.lower() }} {{ u.upper() }}",
    "{{ 'a-b-c'.replace('-', '+') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'ab'.replace('', '.') }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ u.find('👋') }}",
    "{{ 'a-b'.count('-') }} {{ ', '.join(['a', 'b']) }} {{ 'x'.join('abc') }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '123'.isdigit() }} {{ 'ab1'.isalpha() }} {{ '  '.isspace() }}",
    "{{ 'prefix-body'.removeprefix('prefix-') }} {{ 'body.txt'.removesuffix('.txt') }} {{ 'Ab'.isupper() }} {{ 'AB'.isupper() }} {{ 'a1'.isalnum() }}",
    # dict methods
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 5) }}",
    "{{ d.items() | list }}|{{ dict(a=1, b=2) }}|{{ dict({'x': 1}, y=2) }}|{{ {'a': 1, 'a': 2} }}|{{ {1: 'x', true: 'y'} }}",
    # filters
    "{{ xs | length }} {{ 'abc' | length }} {{ u | length }} {{ d | length }} {{ undefined_name | length }} {{ xs | count }}",
    "{{ xs | first }} {{ xs | last }} {{ 'abc' | first }} {{ d | first }} {{ empty | first }}|{{ xs | min }} {{ xs | max }} {{ words | min }} {{ words | max }} {{ words | max(case_sensitive=true) }}",
    "{{ xs | sort }} {{ xs | sort(reverse=true) }} {{ words | sort }} {{ words | sort(case_sensitive=true) }} {{ msgs | sort(attribute='role') | map(attribute='content') | join(',') }}",
    "{{ words | unique | list }} {{ words | unique(case_sensitive=true) | list }} {{ xs | reverse | list }} {{ 'abc' | reverse }} {{ xs | sum }} {{ msgs | map(attribute='content') | list }}",
    "{{ xs | join }} {{ xs | join(', ') }} {{ msgs | join('|', attribute='role') }} {{ [1, none, 'a'] | join('-') }}",
    "{{ s | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello wORLD-foo(bar)' | title }}|{{ 'hELLO world' | capitalize }}",
    "{{ 'a-b-c' | replace('-', '') }} {{ 'aaa' | replace('a', 'b', 1) }} {{ 12 | replace('1', 'x') }} {{ 'one two  three' | wordcount }}",
    "{{ undefined_name | default('dflt') }} {{ '' | default('dflt') }} {{ '' | default('dflt', true) }} {{ n | default('x') }} {{ n | d('x', true) }} {{ none | default }}|",
    "{{ '42' | int }} {{ '  -7 ' | int }} {{ '3.9' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} {{ 3.9 | int }} {{ '0x1A' | int(0, 16) }} {{ '1_000' | int }} {{ true | int }} {{ n | int }}",
    "{{ '1.5' | float }} {{ 2 | float }} {{ 'x' | float }} {{ '1e3' | float }} {{ 'inf' | float }} {{ ' 2 ' | float }}",
    "{{ 1 | string }}{{ [1] | string }}{{ none | string }} {{ 'ab' | list }} {{ d | list }} {{ (1, 2) | list }} {{ undefined_name | list }}",
    "{{ -3 | abs }} {{ -1.5 | abs }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 7 | round }} {{ 1.23456 | round(3, 'floor') }} {{ 1.2 | round(0, 'ceil') }}",
    "{{ d | dictsort }} {{ d | dictsort(reverse=true) }} {{ {'b': 2, 'a': 3} | dictsort(by='value') }} {{ d | items | list }}",
    "{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }} {{ msgs | rejectattr('role', 'eq', 'user') | list | length }} {{ msgs | selectattr('content') | list | length }}",
    "{{ xs | select('odd') | list }} {{ xs | reject('odd') | list }} {{ [0, 1, '', 'a', none] | select | list }} {{ xs | select('gt', 1) | list }} {{ words | map('upper') | list }} {{ xs | map('string') | join }}",
    "{{ msgs | map(attribute='missing', default='?') | join }} {{ [nested] | map(attribute='a.b.2.c') | first }} {{ msgs | selectattr('role', 'in', ['user', 'system']) | list | length }}",
    "{{ '<a href=\"x\">&\\'</a>' | e }} {{ 'x' | safe }} {{ '%s-%s' | format(1, 'b') }} {{ 'a\\nb\\n\\nc' | indent }} {{ 'a\\nb' | indent(2, true) }} {{ 'a\\n\\nb' | indent('> ', blank=true) }}",
    "{{ obj | tojson }}|{{ obj | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson }}|{{ u | tojson }}|{{ u | tojson(ensure_ascii=true) }}",
    "{{ {'b': 1, 'a': [1, 2]} | tojson(sort_keys=true) }}|{{ [1, {'a': 2}] | tojson(separators=(',', ':')) }}|{{ 1.0 | tojson }}|{{ none | tojson }}|{{ 'x\\u0001\\u007f' | tojson }}|{{ xs | tojson(indent=0) }}|{{ {'k': {'n': []}} | tojson(indent='\\t') }}",
    "{{ d | attr('a') }}|{{ 'abc' | attr('upper') is defined }}",
    # statements
    "{% if i > 5 %}big{% elif i > 2 %}mid{% else %}small{% endif %} {% if n %}x{% elif 0 %}y{% endif %}|{% if not n %}z{% endif %}",
    "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}",
    "{% for x in xs %}{{ loop.previtem | default('-') }}>{{ x }}>{{ loop.nextitem | default('-') }} {{ loop.cycle('a', 'b') }}|{% endfor %}",
    "{% for x in xs if x > 1 %}{{ loop.index }}:{{ x }}/{{ loop.length }} {% else %}none{% endfor %}|{% for x in empty %}{{ x }}{% else %}empty{% endfor %}|{% for x in xs if x > 5 %}{% else %}filtered{% endfor %}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% endfor %} {% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %} {% for (a, b) in ['xy'] %}{{ b }}{{ a }}{% endfor %} {% for c in 'hé' %}[{{ c }}]{% endfor %} {% for k in d %}{{ k }}{% endfor %}",
    "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for x in xs %}{% for y in xs %}{% if y == x %}{% break %}{% endif %}{{ y }}{% endfor %};{% endfor %}",
    "{% for r in range(3) %}{{ r }}{% endfor %} {{ range(2, 10, 3) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}",
    "{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(total=0, seen=[]) %}{% for i in xs %}{% set ns.total = ns.total + i %}{% set ns.seen = ns.seen + [i] %}{% endfor %}{{ ns.total }} {{ ns.seen }} {{ ns.missing is defined }}",
    "{% set ns = namespace(d, extra=1) %}{{ ns.a }}{{ ns.extra }}{% set ns.a = 5 %}{{ ns.a }}{{ ns['b'] }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = 1, 2 %}{{ t }} {% set l = [1, 2,] %}{{ l }} {% set e = {'k': 1,} %}{{ e }}",
    "{% set x %}block {{ i }} set{% endset %}[{{ x }}] {% set y | upper | trim %}  shout  {% endset %}[{{ y }}]",
    "{% with a = 1, b = i %}{{ a + b }}{% endwith %}{{ a is defined }} {% with %}{% set inner = 1 %}{% endwith %}{{ inner is defined }}",
    "{% filter upper %}hello {{ 'world' }}{% endfilter %} {% filter replace('a', 'o') | title %}banana bread{% endfilter %}",
    "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet('Cy', punct='?') }} {{ greet() }}|",
    "{% macro list_all() %}{{ varargs | join(',') }}/{{ kwargs | dictsort }}{% endmacro %}{{ list_all(1, 2, x=3) }}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1) | int) }}{% endif %}{% endmacro %}{{ fact(6) }}",
    "{% set g = 'outer' %}{% macro show() %}{{ g }}{% endmacro %}{{ show() }}{% set g = 'changed' %}{{ show() }}",
    "{% raw %}{{ x }}{% if %}{% endraw %}|{#- comment -#}  |{# {{ never }} #}|",
    "{% print 'printed' %} {{ 'a', 'b' }} {{ (1) }} {{ ('x') }}",
    # whitespace control, trim_blocks and lstrip_blocks
    "a\n  {% if true %}\n    b\n  {% endif %}\nc",
    "a  {%- if true -%}  b  {%- endif -%}  c",
    "x\n  {{- 'y' -}}  \n  z",
    "{% for x in xs %}\n  {{ x }}\n{% endfor %}\n",
    "  {%+ if true %}kept indent{% endif %}|  {% if true +%}\nkept newline{% endif %}",
    "line\n    {# comment #}\nnext\n  {#- stripped -#}  after",
    "{% if true %}  inline  {% endif %}  tail",
    "  {{ 'no lstrip for expressions' }}\n  {% set q = 1 %}\n  text {% if true %}\n{% endif %}end",
    "a{% raw -%}   raw  {%- endraw %}b\n  {% raw %}\n  x\n  {% endraw %}\nc",
    "\r\nwindows\r\nnewlines\r\n{% if true %}\r\nx\r\n{% endif %}\r\n",
    "trailing newline kept once\n\n",
    "{{ 'ab\\'c\\\\d\\x41\\u00e9\\U0001F600\\101\\q' }}|{{ 'a' 'b' \"c\" }}|{{ 1_000 }} {{ 0x1f }} {{ 0o17 }} {{ 0b101 }} {{ 1.5e2 }} {{ 2E-1 }}",
    # globals
    "{{ strftime_now('%Y-%m-%d') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%A %B') }}",
    "{{ namespace(a=1).a }} {{ dict(x=1).x }} {{ '{}-{}'.format('a', 2) }} {{ '{1}-{0!r}-{k}-{{}}'.format('a', 2, k=none) }}",
    # errors
    "{{ raise_exception('custom failure: ' ~ i) }}",
    "{{ undefined_name.attr }}",
    "{{ undefined_name + 1 }}",
    "{{ 1 / 0 }}",
    "{{ 'a' + 1 }}",
    "{{ 'a' < 1 }}",
    "{{ n | length }}",
    "{% for x in i %}{% endfor %}",
    "{% set i.x = 1 %}",
    "{{ xs.append(4) }}",
    "{{ range(200000) | length }}",
    "{{ 'x{'.format(1) }}",
    "{{ '{}{0}'.format(1) }}",
    "{% set a, b = [1, 2, 3] %}",
    "{{ d | tojson(indent=2) }}{{ undefined_name | tojson }}",
    "{{ xs[::0] }}",
]


# ---- rendering ----

def transformers_env():
    """The environment transformers' _compile_jinja_template builds, without its generation
    extension (which plain templates never reach)."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.fromtimestamp(CLOCK).strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def preprocess(messages):
    """What transformers does to messages before rendering: drop null-valued keys, then offer the
    reasoning under each name templates read it by."""
    out = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in ("reasoning_content", "thinking", "reasoning")
                          if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def case_record(messages, add_generation_prompt, extra, render):
    record = {"messages": messages, "add_generation_prompt": add_generation_prompt, "extra": extra}
    try:
        record["rendered"] = render(copy.deepcopy(messages), add_generation_prompt, copy.deepcopy(extra))
    except Exception as error:  # the template refused the conversation: record why
        record["error"] = f"{type(error).__name__}: {error}"
    return record


def render_with_transformers(model_dir, cases):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def render(messages, add_generation_prompt, extra):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt, **extra)

    return [case_record(m, a, e, render) for m, a, e in cases]


def special_token(config, name):
    value = config.get(name)
    return value["content"] if isinstance(value, dict) else value


def render_with_jinja(template_dir, cases):
    config = json.loads((template_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    jinja_file = template_dir / "chat_template.jinja"
    if jinja_file.exists():
        templates = {"default": jinja_file.read_text(encoding="utf-8")}
    elif isinstance(config["chat_template"], str):
        templates = {"default": config["chat_template"]}
    else:
        templates = {entry["name"]: entry["template"] for entry in config["chat_template"]}
    env = transformers_env()
    compiled = {name: env.from_string(source) for name, source in templates.items()}
    special = {name: special_token(config, name) for name in ("bos_token", "eos_token")
               if special_token(config, name) is not None}

    def render(messages, add_generation_prompt, extra):
        tools = extra.pop("tools", None)
        documents = extra.pop("documents", None)
        name = "tool_use" if tools is not None and "tool_use" in compiled else "default"
        variables = {**special, **extra}
        return compiled[name].render(messages=preprocess(messages), tools=tools, documents=documents,
                                     add_generation_prompt=add_generation_prompt, **variables)

    return [case_record(m, a, e, render) for m, a, e in cases]


def render_snippets():
    env = transformers_env()
    records = []
    for source in SNIPPETS:
        record = {"template": source}
        try:
            record["rendered"] = env.from_string(source).render(**copy.deepcopy(DATA))
        except Exception as error:
            record["error"] = f"{type(error).__name__}: {error}"
        records.append(record)
    return records


def write(name, records, context=None):
    path = FIXTURES / f"{name}.expected.json"
    document = records if context is None else {"context": context, "cases": records}
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum("error" in r for r in records)
    print(f"{path.relative_to(ROOT)}: {len(records)} cases ({errors} expected errors)")


def main():
    # Qwen3's config lives alone in the repository; transformers needs a tokenizer beside it, and
    # the fixture model's has the same special tokens.
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(FIXTURES / "qwen3" / "tokenizer_config.json", scratch)
        shutil.copy(FIXTURE_MODEL / "tokenizer.json", scratch)
        write("qwen3", render_with_transformers(Path(scratch), QWEN_CASES))
    write("fixture", render_with_transformers(FIXTURE_MODEL, QWEN_CASES))
    write("llama3_style", render_with_jinja(FIXTURES / "llama3_style", LLAMA_CASES))
    write("mistral_style", render_with_jinja(FIXTURES / "mistral_style", MISTRAL_CASES))
    write("macros_and_filters", render_with_jinja(FIXTURES / "macros_and_filters", MACROS_CASES))
    write("deepseek_style", render_with_jinja(FIXTURES / "deepseek_style", DEEPSEEK_CASES))
    write("snippets", render_snippets(), context=DATA)
    return 0


if __name__ == "__main__":
    sys.exit(main())
