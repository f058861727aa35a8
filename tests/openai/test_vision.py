"""Image parts of chat messages with the official `openai` client, on the tiny
random Llama 3.2 Vision checkpoint (converted to GGUF by the conftest).

The greedy replies are compared with transformers' on the same checkpoint:
crates/models/tests/golden/mllama/cases.json holds each case's prompt, images
and 8 greedy token ids (see make_goldens.py beside it).
"""

import base64
import json
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import openai
import pytest
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "crates" / "models" / "tests" / "golden" / "mllama"
CASES = {c["name"]: c for c in json.loads((GOLDEN / "cases.json").read_text())["cases"]}

# The golden greedy ids of each tiny-mllama case with images, decoded once with
# the Hugging Face `tokenizers` 0.23.3 package and Meta's Llama 3.2 tokenizer:
#   Tokenizer.from_file(".cache/testdata/llama3.2-tokenizer.json").decode(case["greedy"])
# (A random checkpoint: the text means nothing, only that it is the same.)
GOLDEN_TEXT = {
    "a": " weap Src weap Src(Action Trader/***************************************************************************\n malicious",
    "b": " weap\u00e9fono.stringValueentityManager wand (;; matures\">$",
    "c": " ArgumentExceptionwifi (;;(ViewGroup Urgable NAS unidades",
    "d": " weap\u00e9fono \u0641\u0631\u0627\u0648.Clone\u00e9fono\u044b\u0432\u0430\u043d\u0438\u044fInto\u500b\u4eba",
    "f": " weap\",\u9b54\u6cd5 (;;\u0161enonceselaide \u0627\u0641\u0631",
}

USER_HEAD = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
USER_TAIL = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)


def data_url(path):
    mime = {".png": "image/png", ".jpg": "image/jpeg"}[path.suffix]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def text(t):
    return {"type": "text", "text": t}


def case_content(name):
    """The user message's content parts that case `name`'s prompt holds:
    its text split at each <|image|>, the case's images in order."""
    case = CASES[name]
    prompt = case["prompt"]
    assert prompt.startswith(USER_HEAD) and prompt.endswith(USER_TAIL), prompt
    pieces = prompt[len(USER_HEAD):-len(USER_TAIL)].split("<|image|>")
    assert len(pieces) == len(case["images"]) + 1
    parts = [text(pieces[0])] if pieces[0] else []
    for img, piece in zip(case["images"], pieces[1:]):
        parts.append(image(data_url(GOLDEN / img["file"])))
        if piece:
            parts.append(text(piece))
    return parts


def post_json(server, path, body):
    req = urllib.request.Request(server.base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def greedy(c, messages, **kw):
    args = dict(model="tiny-mllama", messages=messages, temperature=0, max_tokens=8)
    args.update(kw)
    return c.chat.completions.create(**args)


def stream_text(c, messages):
    text_out, usage = "", None
    for chunk in greedy(c, messages, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text_out += ch.delta.content or ""
    return text_out, usage


def test_template_renders_the_golden_prompt(vision_server):
    # One image part, then the text: exactly case a's prompt (the tiny
    # checkpoint's template writes the Llama 3.2 Vision format, with no
    # system block when a message has an image).
    r = post_json(vision_server, "/apply-template",
                  {"messages": [{"role": "user", "content": case_content("a")}],
                   "add_generation_prompt": True})
    assert r["prompt"] == CASES["a"]["prompt"]


def test_greedy_reply_matches_transformers(vision_server):
    r = greedy(client(vision_server), [{"role": "user", "content": case_content("a")}])
    assert r.choices[0].message.content == GOLDEN_TEXT["a"]
    assert r.usage.prompt_tokens == len(CASES["a"]["tokens"])
    assert r.usage.completion_tokens == 8
    assert r.choices[0].finish_reason == "length"


def test_streamed_reply_matches_transformers(vision_server):
    c = client(vision_server)
    messages = [{"role": "user", "content": case_content("a")}]
    streamed, usage = stream_text(c, messages)
    assert streamed == greedy(c, messages).choices[0].message.content
    assert streamed == GOLDEN_TEXT["a"]
    assert usage.completion_tokens == 8


@pytest.mark.parametrize("name", ["b", "c", "d", "f"])
def test_more_golden_cases(vision_server, name):
    # b: a wide JPEG (three tiles); c: image, text, image, text; d: two
    # images side by side; f: a transparent RGBA PNG.
    r = greedy(client(vision_server), [{"role": "user", "content": case_content(name)}])
    assert r.choices[0].message.content == GOLDEN_TEXT[name]
    assert r.usage.prompt_tokens == len(CASES[name]["tokens"])


def test_q8_0_model_answers(vision_q8_server):
    r = greedy(client(vision_q8_server), [{"role": "user", "content": case_content("a")}])
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.choices[0].message.content


def test_local_image_paths_under_the_allowed_folder(vision_q8_server):
    c = client(vision_q8_server)
    for url in [str(GOLDEN / "img-a-40x30.png"), "file://" + str(GOLDEN / "img-a-40x30.png")]:
        r = greedy(c, [{"role": "user", "content": [image(url), text("Describe this.")]}])
        assert r.usage.completion_tokens == 8
    for url, needle in [(str(GOLDEN / ".." / "mllama-nothing.png"), "cannot open"),
                        (str(GOLDEN / ".." / ".." / ".." / "Cargo.toml"), "outside the allowed"),
                        (str(ROOT / "Cargo.toml"), "outside the allowed")]:
        with pytest.raises(openai.BadRequestError) as e:
            greedy(c, [{"role": "user", "content": [image(url), text("Describe this.")]}])
        assert needle in e.value.message, (url, e.value.message)


def test_two_images_in_one_message(vision_server):
    parts = [image(data_url(GOLDEN / "img-d1-100x100.png")),
             image(data_url(GOLDEN / "img-d2-64x48.png")), text("Describe both.")]
    r = greedy(client(vision_server), [{"role": "user", "content": parts}])
    assert r.usage.completion_tokens == 8
    assert r.choices[0].message.content


def test_images_across_two_messages(vision_server):
    messages = [
        {"role": "user", "content": [image(data_url(GOLDEN / "img-a-40x30.png")),
                                     text("Describe this.")]},
        {"role": "assistant", "content": "A picture."},
        {"role": "user", "content": [image(data_url(GOLDEN / "img-b-120x50.jpg")),
                                     text("And this one?")]},
    ]
    r = post_json(vision_server, "/apply-template",
                  {"messages": messages, "add_generation_prompt": True})
    assert r["prompt"].count("<|image|>") == 2
    assert r["prompt"].index("Describe this.") < r["prompt"].index("A picture.") \
        < r["prompt"].index("And this one?")
    r = greedy(client(vision_server), messages)
    assert r.usage.completion_tokens == 8
    assert r.choices[0].message.content


def test_system_message_with_an_image_is_refused(vision_server):
    # As Llama 3.2 Vision's own template does (the tiny checkpoint's copies it).
    c = client(vision_server)
    with pytest.raises(openai.BadRequestError) as e:
        greedy(c, [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": case_content("a")}])
    assert "incompatible with system messages" in e.value.message, e.value.message
    r = greedy(c, [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Describe a cat."}])
    assert r.usage.completion_tokens == 8


def test_text_only_request(vision_server):
    c = client(vision_server)
    r = greedy(c, [{"role": "user", "content": "Describe a cat."}])
    assert r.usage.completion_tokens == 8
    assert r.choices[0].message.content
    # Text given as content parts is the same request.
    r2 = greedy(c, [{"role": "user", "content": [text("Describe a cat.")]}])
    assert r2.choices[0].message.content == r.choices[0].message.content


def png_header_only(width, height):
    """A PNG whose header claims width x height RGB pixels, with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def b64_url(data, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(data).decode()


BAD_REQUESTS = {
    "corrupt base64": (
        [image("data:image/png;base64,iVBORw0K!!!not*base64"), text("Describe this.")],
        "not valid base64"),
    "not an image": (
        [image(b64_url(b"plain text, not the bytes of any image format")), text("Describe this.")],
        "unrecognised image format"),
    "huge png header": (
        [image(b64_url(png_header_only(100000, 100000))), text("Describe this.")],
        "over the limit"),
    "remote url": (
        [image("http://example.com/cat.png"), text("Describe this.")],
        "remote image URLs are not fetched"),
    "local path": (
        [image(str(GOLDEN / "img-a-40x30.png")), text("Describe this.")],
        "--allow-image-path"),
    "file url": (
        [image("file://" + str(GOLDEN / "img-a-40x30.png")), text("Describe this.")],
        "--allow-image-path"),
    "image part without a url": (
        [{"type": "image_url", "image_url": {}}, text("Describe this.")],
        "image_url.url"),
    "image token typed beside an image": (
        [image(data_url(GOLDEN / "img-a-40x30.png")), text("<|image|>Describe this.")],
        "2 image tokens for 1 images"),
    "image token typed without an image": (
        "<|image|>Describe this.",
        "1 image tokens for 0 images"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_images_are_400_and_the_server_keeps_serving(vision_server, name):
    content, needle = BAD_REQUESTS[name]
    c = client(vision_server)
    with pytest.raises(openai.BadRequestError) as e:
        greedy(c, [{"role": "user", "content": content}])
    assert e.value.status_code == 400
    assert needle in e.value.message, e.value.message
    # Streaming requests are refused before the stream starts, the same way.
    with pytest.raises(openai.BadRequestError) as e:
        greedy(c, [{"role": "user", "content": content}], stream=True)
    assert needle in e.value.message, e.value.message
    r = greedy(c, [{"role": "user", "content": "Describe a cat."}], max_tokens=2)
    assert r.usage.completion_tokens == 2


def test_bad_image_names_the_part(vision_server):
    req = urllib.request.Request(
        vision_server.base + "/v1/chat/completions",
        data=json.dumps({"messages": [
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [text("Look:"), image("http://example.com/x.png")]},
        ]}).encode(),
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    err = json.load(e.value)["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "messages[2].content[1]"


def test_text_model_refuses_images(server):
    c = OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="smollm2", max_tokens=4,
            messages=[{"role": "user", "content": [image(data_url(GOLDEN / "img-a-40x30.png")),
                                                   text("Describe this.")]}])
    assert e.value.status_code == 400
    assert "takes no images" in e.value.message, e.value.message
    r = c.chat.completions.create(model="smollm2", max_tokens=2,
                                  messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content is not None


def test_models_lists_the_vision_model(vision_server):
    ids = [m.id for m in client(vision_server).models.list().data]
    assert ids == ["tiny-mllama-f32.gguf"]
