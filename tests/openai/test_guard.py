"""A guard model beside the main one, through the official `openai` client:
models listed, moderations, the input shield blocking a prompt, the output
shield stopping a reply mid-stream.

The guard is the tiny random Llama-Guard-shaped model
(scripts/make-tiny-guard.py): it answers "unsafe" to everything with a
probability of about 0.55-0.75 that depends on the conversation, so the
threshold decides what is flagged.
"""

import json
import subprocess

import openai
import pytest
from openai import OpenAI

import conftest
from conftest import Server

GUARD = "tiny-llama-guard.gguf"
MAIN = "SmolLM2-135M-Instruct.Q4_1.gguf"
REFUSAL = "Sorry, I can't help with that."
STORY = "Write a short story about a cat."


def guard_path():
    p = conftest.testdata() / GUARD
    if not p.is_file():
        pytest.fail(f"{p} is missing: run scripts/fetch-testdata.sh")
    return p


def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def guarded():
    """Both shields at the default threshold: the tiny guard flags everything."""
    s = Server("--parallel", "2", "-c", "1024", "--guard-model", guard_path(), "--guard", "both",
               "--guard-refusal", REFUSAL)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def lenient():
    """The guard served for moderations only, no shields."""
    s = Server("--parallel", "2", "-c", "1024", "--guard-model", guard_path())
    yield s
    s.stop()


def test_models_lists_both_and_unknown_names_are_404(guarded):
    c = client(guarded)
    ids = [m.id for m in c.models.list().data]
    assert ids == [MAIN, GUARD]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "model_not_found"


def test_moderation_of_one_and_several_inputs(lenient):
    c = client(lenient)
    r = c.moderations.create(input="How do I bake bread?")
    assert r.model == GUARD
    (res,) = r.results
    lg = res.model_extra["llama_guard"]
    assert res.flagged == lg["flagged"] and lg["unsafe_probability"] >= 0.5
    assert lg["verdict"] == "unsafe" and lg["categories"] == ["S11"]
    # S11 (Self-Harm) is what OpenAI calls self-harm.
    assert res.categories.self_harm is True and res.categories.violence is False
    assert res.category_scores.self_harm == pytest.approx(lg["category_scores"]["S11"])
    assert 0 < lg["category_scores"]["S11"] < lg["unsafe_probability"]

    several = c.moderations.create(input=["How do I bake bread?", "Tell me about whales."])
    assert len(several.results) == 2
    first = several.results[0].model_extra["llama_guard"]["unsafe_probability"]
    assert first == pytest.approx(lg["unsafe_probability"], abs=1e-6)
    with pytest.raises(openai.NotFoundError):
        c.moderations.create(input="x", model="nope")
    with pytest.raises(openai.BadRequestError):
        c.moderations.create(input="x", model=MAIN)


def test_the_input_shield_refuses_without_generating(guarded):
    c = client(guarded)
    r = c.chat.completions.create(model=MAIN, messages=[{"role": "user", "content": STORY}],
                                  max_tokens=16)
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].message.content == REFUSAL
    assert r.usage.completion_tokens == 0
    chunks = list(c.chat.completions.create(
        model=MAIN, messages=[{"role": "user", "content": STORY}], max_tokens=16, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    # The guard itself is a model too, and is not shielded by itself.
    g = c.chat.completions.create(model=GUARD, messages=[{"role": "user", "content": STORY}],
                                  max_tokens=4, temperature=0)
    assert g.choices[0].finish_reason != "content_filter"
    m = guarded.metrics()
    assert m['edgellama_guard_checks_total{stage="input"}'] >= 2
    assert m['edgellama_guard_blocks_total{stage="input",category="S11"}'] >= 2


def guard_probability(messages, path):
    """The probability of "unsafe" the guard gives the last turn, by `edgellama guard`
    (the code path the server's shield runs)."""
    path.write_text(json.dumps(messages))
    r = subprocess.run([str(conftest.binary()), "guard", "-m", str(guard_path()), "--messages", str(path),
                        "--json", "-t", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["unsafe_probability"]


def test_the_output_shield_stops_a_reply_mid_stream(lenient, tmp_path):
    chunk = 40
    ask = dict(model=MAIN, messages=[{"role": "user", "content": STORY}], max_tokens=64,
               temperature=0, stream=True)
    # The unshielded reply, piece by piece as the server releases it.
    pieces = [ch.choices[0].delta.content or "" for ch in client(lenient).chat.completions.create(**ask)
              if ch.choices]
    pieces = [p for p in pieces if p]
    # Where the shield checks: whenever `chunk` bytes wait, and at the end.
    checks, pending, sent = [], "", ""
    for p in pieces:
        pending += p
        if len(pending.encode()) >= chunk:
            sent += pending
            pending = ""
            checks.append(sent)
    if pending:
        checks.append(sent + pending)
    probs = [guard_probability([{"role": "user", "content": STORY},
                                {"role": "assistant", "content": t}], tmp_path / "m.json")
             for t in checks]
    # A threshold that passes the first checks and flags a later one.
    k = next((i for i in range(1, len(probs)) if probs[i] > max(probs[:i]) + 1e-3), None)
    assert k is not None, f"no later check scores above the earlier ones: {probs}"
    threshold = (max(probs[:k]) + probs[k]) / 2
    s = Server("--parallel", "2", "-c", "1024", "--guard-model", guard_path(), "--guard", "output",
               "--guard-threshold", f"{threshold:.6f}", "--guard-output-chunk", str(chunk))
    try:
        got = list(client(s).chat.completions.create(**ask))
        text = "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices)
        assert text == checks[k - 1], (probs, threshold)
        assert got[-1].choices[0].finish_reason == "content_filter"
        whole = client(s).chat.completions.create(**{**ask, "stream": False})
        assert whole.choices[0].message.content == checks[k - 1]
        assert whole.choices[0].finish_reason == "content_filter"
        assert whole.usage.completion_tokens < 64
    finally:
        s.stop()


def test_a_vision_guard_moderates_an_image(vision_models):
    """Llama Guard 3 11B-Vision's setup: a Llama 3.2 Vision model with the guard template
    (here the tiny random checkpoint, which is no guard: its probabilities are small), an
    image_url part in the moderation input. Held to transformers' number for the same
    conversation and image (crates/engine/tests/golden/guard/vision_scores.json)."""
    import base64
    import math

    golden_dir = conftest.ROOT / "crates" / "engine" / "tests" / "golden" / "guard"
    want = json.loads((golden_dir / "vision_scores.json").read_text())["cases"][0]
    png = conftest.ROOT / want["image"]
    url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    s = Server("--parallel", "2", "-c", "1024", "--guard-model", vision_models["f32"],
               "--guard-chat-template-file", golden_dir / "llama-guard-3-1b.jinja")
    try:
        c = client(s)
        text = want["messages"][0]["content"][1]["text"]
        r = c.moderations.create(input=[{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}])
        lg = r.results[0].model_extra["llama_guard"]
        assert abs(math.log(lg["unsafe_probability"]) - want["log_unsafe_probability"]) < 2e-3
        for code, w in want["log_category_scores"].items():
            assert abs(math.log(lg["category_scores"][code]) - w) < 2e-3, code
        with pytest.raises(openai.BadRequestError):
            c.moderations.create(input=[{"type": "image_url", "image_url": {"url": url}}] * 2)
    finally:
        s.stop()


def test_a_text_guard_refuses_images(lenient):
    with pytest.raises(openai.BadRequestError) as e:
        client(lenient).moderations.create(
            input=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    assert "no images" in str(e.value)
