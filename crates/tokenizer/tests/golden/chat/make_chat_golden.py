#!/usr/bin/env python3
"""Chat-template goldens, rendered the way Hugging Face `apply_chat_template` does.

Rerun from the repository root:

    python3 crates/tokenizer/tests/golden/chat/make_chat_golden.py

Pinned versions used to produce the committed goldens:
    Python 3.11.7, jinja2==3.1.6, gguf==0.19.0 (gguf-py, only to read the
    SmolLM2 template out of the GGUF file).

Inputs:
    llama3.2.jinja  -- copied byte for byte from llama.cpp's
                       models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja
                       (llama.cpp as vendored in llama-cpp-python==0.3.36),
                       sha256 5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4
    llama3.1.jinja  -- likewise from models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja
                       (built-in tools with <|python_tag|> and <|eom_id|>), sha256 e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65
    SmolLM2-135M-Instruct.Q4_1.gguf (test data, `tokenizer.chat_template`,
                       bos/eos token texts from its vocabulary)

The Jinja environment copies transformers' `_compile_jinja_template`
(transformers/utils/chat_template_utils.py): an ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, the loopcontrols extension, a `tojson`
filter that is plain `json.dumps` (ensure_ascii=False, no HTML escaping),
and `raise_exception` / `strftime_now` globals. `render` receives `messages`,
`tools`, `documents=None`, `add_generation_prompt`, then the special tokens
and any extra keyword arguments, as `render_jinja_template` passes them.

`strftime_now` reads a fixed clock, 2024-07-26 10:20:30, so the Llama date
line is "26 Jul 2024"; the Rust tests inject the same instant.

Outputs (next to this script):
    chat_cases.json     -- every case: its request and, per template, either
                           the rendered text or the error jinja2 raised.
    strftime.json       -- strftime results for the formats `strftime_now`
                           must support, at a few instants.
    features.json       -- small templates exercising the jinja2 and Python
                           behaviour HF templates rely on (string methods,
                           namespace, loop controls, printing of None/bools/
                           dicts/floats, tojson options, whitespace control),
                           rendered on one fixed conversation.
"""

import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "../../../../.."))
TESTDATA = os.environ.get("EDGELLAMA_TESTDATA", os.path.join(ROOT, ".cache/testdata"))

assert jinja2.__version__ == "3.1.6", f"pinned jinja2==3.1.6, found {jinja2.__version__}"

CLOCK = datetime.datetime(2024, 7, 26, 10, 20, 30)


def compile_template(source, clock=CLOCK):
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return clock.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def render(template, case, special):
    kwargs = dict(special)
    kwargs.update(case.get("kwargs", {}))
    try:
        text = template.render(
            messages=case["messages"],
            tools=case.get("tools"),
            documents=None,
            add_generation_prompt=case.get("add_generation_prompt", False),
            **kwargs,
        )
        return {"text": text}
    except Exception as e:  # jinja2 and Python errors alike: the case must fail in Rust too
        return {"error": f"{type(e).__name__}: {e}"}


def smollm2_template_and_tokens():
    from gguf import GGUFReader

    path = os.path.join(TESTDATA, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: run scripts/fetch-testdata.sh")
    r = GGUFReader(path)

    def field(name):
        f = r.fields[name]
        return f.parts[f.data[0]]

    source = bytes(field("tokenizer.chat_template")).decode("utf-8")
    tokens = r.fields["tokenizer.ggml.tokens"]
    text = lambda i: bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    bos = text(int(field("tokenizer.ggml.bos_token_id")[0]))
    eos = text(int(field("tokenizer.ggml.eos_token_id")[0]))
    return source, {"bos_token": bos, "eos_token": eos}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Heure actuelle — dans un fuseau horaire donné <tz> & \"quoted\"",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "default": "UTC"}},
            "required": [],
        },
    },
}
NUMBERS = {
    "type": "function",
    "function": {
        "name": "set_thermostat",
        "description": "Set a temperature",
        "parameters": {
            "type": "object",
            "properties": {
                "target": {"type": "number", "minimum": -12.5, "maximum": 1e20, "default": 21.0},
                "step": {"type": "integer", "default": 1, "multipleOf": 0.0001},
                "eco": {"type": "boolean", "default": True},
                "note": {"type": ["string", "null"], "default": None},
            },
            "required": ["target"],
        },
    },
}


def call(name, arguments, call_id=None):
    c = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        c["id"] = call_id
    return c


U = lambda t: {"role": "user", "content": t}
A = lambda t: {"role": "assistant", "content": t}
S = lambda t: {"role": "system", "content": t}

CASES = [
    ("user_only_gen", [U("Hello!")], None, True, {}),
    ("user_only_no_gen", [U("Hello!")], None, False, {}),
    ("system_user", [S("You are a pirate."), U("Who are you?")], None, True, {}),
    (
        "multi_turn",
        [S("Be brief."), U("What is 2+2?"), A("4."), U("And 3+3?")],
        None,
        True,
        {},
    ),
    (
        "multi_turn_long",
        [U("Hi"), A("Hello! How can I help?"), U("Tell me a joke."), A("Why did the chicken cross the road?"), U("Why?"), A("To get to the other side.")],
        None,
        False,
        {},
    ),
    ("system_whitespace", [S("  \n You are helpful.\n\n "), U("  padded question \n")], None, True, {}),
    ("system_only", [S("Only a system prompt.")], None, True, {}),
    ("empty_messages", [], None, True, {}),
    ("empty_content", [U("")], None, True, {}),
    ("assistant_prefill", [U("Write a haiku."), A("Autumn moonlight—")], None, False, {}),
    ("multiline_content", [U("line one\nline two\n\n\tindented\r\nwindows")], None, True, {}),
    ("special_token_text", [U("Please say <|eot_id|> and <|im_end|> literally.")], None, True, {}),
    ("lang_german", [S("Du bist ein hilfreicher Assistent."), U("Wie spät ist es in Zürich? Größe, Straße.")], None, True, {}),
    ("lang_french", [U("Où est la bibliothèque ? C'est très élégant, « ça va » ?")], None, True, {}),
    ("lang_italian", [U("Perché il caffè è così buono? Città, università.")], None, True, {}),
    ("lang_portuguese", [U("Você pode me ajudar com a tradução? Não, obrigação, ação.")], None, True, {}),
    ("lang_hindi", [S("आप एक सहायक हैं।"), U("नमस्ते, आप कैसे हैं?")], None, True, {}),
    ("lang_spanish", [U("¿Dónde está el baño? ¡Mañana será un año!"), A("Está al fondo, señor."), U("¡Gracias!")], None, True, {}),
    ("lang_thai", [U("สวัสดีครับ คุณชื่ออะไร")], None, True, {}),
    ("emoji_cjk", [U("你好，世界 🌍🚀 こんにちは 안녕하세요 \u200b zero-width")], None, True, {}),
    ("tools_in_user", [U("What is the weather in Paris?")], [WEATHER], True, {}),
    ("tools_with_system", [S("You call tools."), U("Weather in Bangkok, and the time?")], [WEATHER, TIME], True, {}),
    ("tools_in_system", [U("Weather in Rome?")], [WEATHER], True, {"tools_in_user_message": False}),
    ("tools_numbers_schema", [U("Set it to 19.5")], [NUMBERS], True, {}),
    (
        "tool_call_and_result",
        [
            U("What's the weather in Paris?"),
            {"role": "assistant", "tool_calls": [call("get_current_weather", {"location": "Paris, France", "unit": "celsius"}, "call_1")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees, sunny"},
        ],
        [WEATHER],
        True,
        {},
    ),
    (
        "tool_result_ipython_role",
        [
            U("What time is it in Tokyo?"),
            {"role": "assistant", "tool_calls": [call("get_time", {"tz": "Asia/Tokyo"})]},
            {"role": "ipython", "content": "18:04"},
            A("It is 18:04 in Tokyo."),
        ],
        [TIME],
        False,
        {},
    ),
    (
        "tool_call_unicode_args",
        [
            U("Météo à Zürich ?"),
            {
                "role": "assistant",
                "tool_calls": [
                    call(
                        "get_current_weather",
                        {"location": "Zürich, Schweiz — 東京 🌧", "extra": {"quote": "say \"hi\"\n", "path": "C:\\tmp", "html": "<b>&</b>", "n": [1, 2.5, -3e-7, True, None]}},
                    )
                ],
            },
            {"role": "tool", "content": "Bewölkt, 14 °C"},
        ],
        [WEATHER],
        True,
        {},
    ),
    (
        "tool_call_string_arguments",
        [
            U("Weather in Oslo?"),
            {"role": "assistant", "content": "", "tool_calls": [call("get_current_weather", "{\"location\": \"Oslo\"}")]},
            {"role": "tool", "content": "-3 C"},
        ],
        None,
        True,
        {},
    ),
    (
        "tool_result_mapping",
        [
            U("Weather?"),
            {"role": "assistant", "tool_calls": [call("get_current_weather", {"location": "Lima"})]},
            {"role": "tool", "content": {"temperature": 18, "conditions": "cloudy", "wind": None, "ok": True}},
        ],
        [WEATHER],
        True,
        {},
    ),
    (
        "tool_result_number",
        [
            U("Count?"),
            {"role": "assistant", "tool_calls": [call("count", {})]},
            {"role": "tool", "content": 42},
        ],
        None,
        True,
        {},
    ),
    (
        "two_tool_calls_rejected",
        [
            U("Weather in Paris and Rome?"),
            {"role": "assistant", "tool_calls": [call("get_current_weather", {"location": "Paris"}), call("get_current_weather", {"location": "Rome"})]},
        ],
        [WEATHER],
        False,
        {},
    ),
    ("tools_without_user_rejected", [], [WEATHER], True, {}),
    ("date_string_kwarg", [U("What day is it?")], None, True, {"date_string": "01 Jan 2025"}),
    ("custom_tools_kwarg", [U("Time in UTC?")], None, True, {"custom_tools": [TIME]}),
    ("content_parts", [{"role": "user", "content": [{"type": "text", "text": "Describe this."}]}], None, True, {}),
    ("named_user", [{"role": "user", "name": "alice", "content": "Hi, I'm Alice."}], None, True, {}),
    ("system_after_first", [U("Hi"), S("Late system message"), U("Again")], None, True, {}),
    ("add_generation_prompt_after_assistant", [U("Hi"), A("Hello")], None, True, {}),
    (
        "builtin_tools_search",
        [
            S("Answer with sources."),
            U("Who won the 2024 Tour de France?"),
            {"role": "assistant", "tool_calls": [call("brave_search", {"query": "Tour de France 2024 winner"})]},
            {"role": "ipython", "content": "{\"results\": [\"Tadej Pogačar\"]}"},
        ],
        None,
        True,
        {"builtin_tools": ["brave_search", "wolfram_alpha"]},
    ),
    (
        "builtin_and_custom_tools",
        [
            U("Solve x^2 = 2, then check the weather in Lyon."),
            {"role": "assistant", "tool_calls": [call("wolfram_alpha", {"query": "solve x^2 = 2"})]},
            {"role": "ipython", "content": "x = ±√2"},
            {"role": "assistant", "tool_calls": [call("get_current_weather", {"location": "Lyon"})]},
            {"role": "tool", "content": "sunny"},
        ],
        [WEATHER],
        True,
        {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]},
    ),
]

STRFTIME_FORMATS = ["%d %b %Y", "%Y-%m-%d", "%B %d, %Y", "%A %a %j", "%H:%M:%S %I %p", "%y %e %%", "%d %B %Y %H:%M"]
STRFTIME_INSTANTS = [
    CLOCK,
    datetime.datetime(2000, 2, 29, 0, 0, 0),
    datetime.datetime(1999, 12, 31, 23, 59, 59),
    datetime.datetime(2025, 1, 5, 12, 7, 9),
    datetime.datetime(2038, 9, 1, 13, 0, 1),
]


FEATURE_MESSAGES = [
    {"role": "system", "content": "  You are helpful.  "},
    {"role": "user", "content": "Hello there, général Kenobi"},
    {"role": "assistant", "content": "Bonjour!"},
    {"role": "user", "content": "a,b,,c"},
]
FEATURE_TOOLS = [WEATHER, NUMBERS]
FEATURES = [
    ("str_methods", "{{ messages[0].content.strip() }}|{{ messages[0].content.lstrip() }}|{{ messages[0].content.rstrip() }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}"),
    ("str_split_print", "{{ messages[3].content.split(',') }}{{ messages[1].content.split() }}{{ 'a b c'.split(' ', 1) }}"),
    ("str_case", "{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}{{ 'hello world'.title() }}{{ 'hello'.capitalize() }}{{ 'x-y'.replace('-', '+') }}{{ 'banana'.count('a') }}{{ 'banana'.find('n') }}"),
    ("namespace", "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}"),
    ("loop_controls", "{% for i in range(10) %}{% if i == 3 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}{% endif %}{{ i }}{{ ',' if not loop.last }}{% endfor %}"),
    ("loop_vars", "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}"),
    ("print_values", "{{ none }}|{{ true }}|{{ false }}|{{ {'a': 1.0, 'b': [none, 'x', \"it's\"]} }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 10 / 4 }}|{{ 7 // 2 }}|{{ 2 ** 10 }}|{{ 7 % 3 }}|{{ -0.0 }}|{{ (1, 2) }}|{{ (1,) }}|{{ () }}"),
    ("tojson_variants", "{{ tools[1] | tojson }}\n{{ tools[1] | tojson(indent=2) }}\n{{ tools[1] | tojson(separators=(',', ':')) }}\n{{ tools[1] | tojson(sort_keys=true) }}\n{{ messages[1] | tojson(ensure_ascii=true) }}\n{{ 'x\\ny\\t\\u0001' | tojson }}"),
    ("tojson_indent_string", "{{ tools[0].function.parameters | tojson(indent='\\t') }}"),
    ("filters", "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | map(attribute='role') | join(',') }}|{{ (messages | last).content }}|{{ messages | first | tojson }}|{{ messages[0].content | trim }}|{{ messages[0].content | length }}|{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }}"),
    ("tests", "{{ messages[0].content is string }}{{ messages[0] is mapping }}{{ messages is sequence }}{{ 'a' is sequence }}{{ 'a' is iterable }}{{ messages[0] is iterable }}{{ 1 is number }}{{ none is none }}{{ nothing is defined }}{{ messages[0].content is defined }}{{ 'x' in 'xyz' }}{{ 'role' in messages[0] }}"),
    ("slicing", "{{ 'abcdef'[1:] }}|{{ 'abcdef'[:-2] }}|{{ 'abcdef'[::2] }}|{{ messages[-1].role }}|{{ messages[1:3] | length }}|{{ (messages[::-1] | first).content }}"),
    ("dict_items", "{% for k, v in tools[1].function.parameters.properties.target.items() %}{{ k }}={{ v }};{% endfor %}{{ tools[0].function.keys() | list }}{{ tools[0].get('nope', 'dflt') }}"),
    ("whitespace", "  {% if true %}\n    yes\n  {% endif %}\n  {# comment #}\ntext\n    {%- if true -%}\n  tight\n  {%+ if true %}keep{% endif %}\n{% endif %}\nend\n"),
    ("trailing_newline", "line\n"),
    ("set_block", "{% set x %}inner {{ bos_token }}{% endset %}[{{ x }}]"),
    ("macro", "{% macro m(role, text='none') %}<{{ role }}:{{ text }}>{% endmacro %}{% for msg in messages %}{{ m(msg.role, msg.content | trim) }}{% endfor %}{{ m('x') }}"),
    ("inline_if_raise", "{{ raise_exception('boom') if false else 'ok' }}{% if messages | length > 100 %}{{ raise_exception('too long') }}{% endif %}"),
    ("raise", "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"),
    ("concat_tilde", "{{ 'a' ~ 1 ~ 2.5 ~ true }}"),
    ("string_filter", "{{ messages[0] | string }}|{{ [1, 'a'] | string }}|{{ none | string }}"),
    ("join_and_default", "{{ ['a', 'b'] | join(', ') }}|{{ nothing | default('dflt') }}|{{ none | default('x', true) }}|{{ messages | length }}"),
    ("strftime", "{{ strftime_now('%Y-%m-%d %H:%M') }}"),
    ("undefined_attr_error", "{{ messages[0].nope.deeper }}"),
    ("dict_literal_order", "{{ {'z': 1, 'a': 2, 'm': 3} | tojson }}{{ {'z': 1, 'a': 2} }}"),
    ("int_float_ops", "{{ 3 + 0.5 }}|{{ 4 * 2.5 }}|{{ 1 / 3 }}|{{ 2 ** 0.5 }}|{{ 10 | float }}|{{ '42' | int }}|{{ 3.7 | int }}|{{ 1000000 * 1000000 }}"),
]


def main():
    with open(os.path.join(HERE, "llama3.2.jinja"), encoding="utf-8") as f:
        llama_source = f.read()
    with open(os.path.join(HERE, "llama3.1.jinja"), encoding="utf-8") as f:
        llama31_source = f.read()
    smol_source, smol_special = smollm2_template_and_tokens()
    templates = {
        "llama3.2": (compile_template(llama_source), {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
        "smollm2": (compile_template(smol_source), smol_special),
        "llama3.1": (compile_template(llama31_source), {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    }
    cases = []
    for name, messages, tools, gen, kwargs in CASES:
        case = {"name": name, "messages": messages, "add_generation_prompt": gen}
        if tools is not None:
            case["tools"] = tools
        if kwargs:
            case["kwargs"] = kwargs
        case["expected"] = {key: render(t, case, special) for key, (t, special) in templates.items()}
        cases.append(case)
    out = {
        "generator": "make_chat_golden.py (jinja2 3.1.6, transformers' chat environment)",
        "clock": CLOCK.isoformat(),
        "special_tokens": {key: special for key, (_, special) in templates.items()},
        "cases": cases,
    }
    with open(os.path.join(HERE, "chat_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")

    rows = []
    for when in STRFTIME_INSTANTS:
        rows.append({"instant": when.isoformat(), "results": {fmt: when.strftime(fmt) for fmt in STRFTIME_FORMATS}})
    with open(os.path.join(HERE, "strftime.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")
    features = []
    for name, src in FEATURES:
        t = compile_template(src)
        case = {"messages": FEATURE_MESSAGES, "tools": FEATURE_TOOLS, "add_generation_prompt": True}
        features.append({"name": name, "template": src, "expected": render(t, case, {"bos_token": "<s>", "eos_token": "</s>"})})
    with open(os.path.join(HERE, "features.json"), "w", encoding="utf-8") as f:
        json.dump({"messages": FEATURE_MESSAGES, "tools": FEATURE_TOOLS, "bos_token": "<s>", "eos_token": "</s>", "features": features}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("error" in r for c in cases for r in c["expected"].values())
    print(f"{len(cases)} cases, {len(cases) * len(templates) - n_err} rendered, {n_err} errors")


if __name__ == "__main__":
    main()
