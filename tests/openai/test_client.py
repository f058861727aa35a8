"""The official `openai` client against `edgellama serve`."""

import concurrent.futures as cf
import json
import socket
import time

import http.client
import jsonschema
import openai
import pytest
from openai import OpenAI

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "Explain photosynthesis in one sentence.",
    "What is 12 times 12?",
    "Translate 'good morning' into Spanish.",
    "Give me a tip for learning to code.",
    "What is the tallest mountain on Earth?",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What does a bee make?",
    "List two planets.",
    "What is water made of?",
    "Who wrote Romeo and Juliet?",
    "Describe a sunset in five words.",
]


def client(server, **kw):
    return OpenAI(base_url=server.base + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0,
                  timeout=120, **kw)


def ask(c, question, **kw):
    args = dict(model="smollm2", messages=[{"role": "user", "content": question}],
                temperature=0, max_tokens=24)
    args.update(kw)
    return c.chat.completions.create(**args)


def stream_text(c, question, **kw):
    stream = ask(c, question, stream=True, stream_options={"include_usage": True}, **kw)
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    return text, finish, usage


def test_plain_chat(server):
    r = ask(client(server), "What is the capital of France?")
    assert r.object == "chat.completion"
    m = r.choices[0].message
    assert m.role == "assistant" and m.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    parts = client(server).chat.completions.create(
        model="smollm2", temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                               {"type": "text", "text": " of France?"}]}])
    assert parts.choices[0].message.content == m.content


def test_models_and_completions(server):
    c = client(server)
    models = c.models.list()
    assert len(models.data) == 1 and models.data[0].id
    r = c.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                             temperature=0)
    assert "Paris" in r.choices[0].text
    chunks = list(c.completions.create(model="smollm2", prompt="The capital of France is",
                                       max_tokens=4, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == r.choices[0].text


def test_completions_prompt_lists_and_echo(server):
    c = client(server)
    prompts = ["The capital of France is", "Water is made of"]
    solo = [c.completions.create(model="smollm2", prompt=p, max_tokens=4, temperature=0)
            for p in prompts]
    r = c.completions.create(model="smollm2", prompt=prompts, max_tokens=4, temperature=0,
                             echo=True)
    assert [ch.index for ch in r.choices] == [0, 1]
    for ch, p, s in zip(r.choices, prompts, solo):
        assert ch.text == p + s.choices[0].text
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in solo)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="smollm2", prompt="def f():", suffix="    return x")
    assert "suffix" in e.value.body["message"]


def test_streaming_equals_whole_reply(server):
    c = client(server)
    whole = ask(c, "Why is the sky blue?")
    text, finish, usage = stream_text(c, "Why is the sky blue?")
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_sixteen_concurrent_streams_match_their_solo_replies(server):
    c = client(server)
    solo = [ask(c, q).choices[0].message.content for q in QUESTIONS]
    t0 = time.time()
    with cf.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda q: stream_text(c, q), QUESTIONS))
    elapsed = time.time() - t0
    for q, s, (t, finish, usage) in zip(QUESTIONS, solo, together):
        assert t == s, q
        assert finish in ("stop", "length")
        assert usage.completion_tokens > 0
    # Batched, sixteen replies take far less than sixteen solo ones would.
    assert elapsed < 60, elapsed


def test_logprobs_seed_and_n(server):
    c = client(server)
    r = ask(c, "Say something.", logprobs=True, top_logprobs=2, max_tokens=5)
    lps = r.choices[0].logprobs.content
    assert len(lps) == r.usage.completion_tokens
    for t in lps:
        assert t.logprob <= 0 and t.top_logprobs[0].token == t.token
    kw = dict(temperature=1.0, seed=42, n=2, max_tokens=12)
    a = ask(c, "Tell me a joke.", **kw)
    b = ask(c, "Tell me a joke.", **kw)
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    assert len(a.choices) == 2


def test_stop_string(server):
    c = client(server)
    full = ask(c, "List five fruits.", max_tokens=40)
    text = full.choices[0].message.content
    assert "2." in text, text
    r = ask(c, "List five fruits.", max_tokens=40, stop=["2."])
    assert r.choices[0].message.content == text[: text.index("2.")]
    assert r.choices[0].finish_reason == "stop"


WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}]


def test_tools(server):
    c = client(server)
    r = ask(c, "What's the weather in Paris, in celsius?", tools=WEATHER, tool_choice="required",
            max_tokens=200)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    call = ch.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER[0]["function"]["parameters"])
    # The call and a tool result go back in the conversation.
    r2 = c.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=20, tools=WEATHER,
        messages=[
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"},
        ])
    assert r2.choices[0].message.content is not None or r2.choices[0].message.tool_calls
    # Streamed.
    calls = {}
    finish = None
    for chunk in ask(c, "Weather in Tokyo?", tools=WEATHER, tool_choice="required", max_tokens=200,
                     stream=True):
        for chd in chunk.choices:
            for tc in chd.delta.tool_calls or []:
                calls.setdefault(tc.index, {"name": "", "args": ""})
                calls[tc.index]["name"] += tc.function.name or ""
                calls[tc.index]["args"] += tc.function.arguments or ""
            finish = chd.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["args"]), WEATHER[0]["function"]["parameters"])


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "year": {"type": "integer"},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action", "sci-fi"]},
                   "minItems": 1, "maxItems": 3},
        "rating": {"type": "number"},
        "sequel": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["title", "year", "genres", "rating", "sequel"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_json_schema(server, temperature):
    c = client(server)
    r = ask(c, "Describe a movie as JSON.", temperature=temperature, seed=3, max_tokens=150,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "movie", "schema": SCHEMA, "strict": True}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


PATTERN_SCHEMA = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
        "email": {"type": "string", "pattern": r"^[a-z]+@[a-z]+\.(com|org)$", "maxLength": 24},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
        "discount": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5},
        "bucket": {"type": "integer", "multipleOf": 5, "exclusiveMinimum": 0, "maximum": 95},
    },
    "required": ["sku", "email", "quantity", "discount", "bucket"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_pattern_and_bounds(server, temperature):
    c = client(server)
    for seed in range(3):
        r = ask(c, "Describe an order as JSON.", temperature=temperature, seed=seed, max_tokens=200,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "order", "schema": PATTERN_SCHEMA}})
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), PATTERN_SCHEMA)


def test_json_schema_unsupported_keywords_are_named(server):
    c = client(server)
    for schema, keyword in [({"type": "string", "pattern": "(?=x)y"}, "pattern"),
                            ({"type": "number", "multipleOf": 0.01}, "multipleOf"),
                            ({"type": "array", "uniqueItems": True}, "uniqueItems")]:
        with pytest.raises(openai.BadRequestError) as e:
            ask(c, "hi", response_format={"type": "json_schema",
                                          "json_schema": {"name": "x", "schema": schema}})
        assert e.value.status_code == 400
        assert keyword in e.value.body["message"], e.value.body


def test_disconnects_free_slots(server):
    before = server.metrics().get("edgellama_requests_cancelled_total", 0)
    ban_end = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens
    for _ in range(4):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True,
             "logit_bias": ban_end}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        for _ in range(6):
            assert resp.readline()
        conn.close()
    # Raw sockets that send a request and vanish.
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                           "logit_bias": ban_end}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        s.recv(100)
        s.close()
    deadline = time.time() + 20
    while True:
        m = server.metrics()
        if m["edgellama_active_requests"] == 0 and m["edgellama_requests_cancelled_total"] >= before + 8:
            break
        assert time.time() < deadline, m
        time.sleep(0.1)
    assert ask(client(server), "Hi", max_tokens=3).choices[0].message.content is not None


def test_errors(server, keyed_server):
    c = client(server)
    for body, status in [(b'{"messages": [', 400), (b'{"messages": "hi"}', 400),
                         (b"x" * (5 << 20), 413)]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        err = json.loads(r.read())["error"]
        conn.close()
        assert r.status == status, err
        assert err["type"] == "invalid_request_error" and err["message"]
    with pytest.raises(openai.BadRequestError) as e:
        ask(c, "hi", max_tokens="many")
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        ask(c, "word " * 3000)
    msg = e.value.body["message"]
    assert "1024" in msg and "tokens" in msg, msg
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert "image" in e.value.body["message"]
    # Keys.
    with pytest.raises(openai.AuthenticationError):
        ask(client(keyed_server, api_key="wrong"), "hi")
    assert ask(client(keyed_server, api_key="sk-edge"), "hi", max_tokens=2).choices
    # Overload: one slot, no queue. Hold the slot with a stream, then the
    # next request is told to come back later.
    kc = client(keyed_server, api_key="sk-edge")
    stream = ask(kc, "Tell me a long story.", stream=True, max_tokens=200,
                 logit_bias={"0": -100, "1": -100, "2": -100})
    next(iter(stream))
    with pytest.raises(openai.APIStatusError) as e:
        ask(kc, "hi")
    assert e.value.status_code == 503
    assert e.value.response.headers["retry-after"] == "1"
    stream.close()
