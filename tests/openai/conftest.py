"""Starts `edgellama serve` on the SmolLM2 test model for the client tests,
and on the tiny random Llama 3.2 Vision checkpoint (converted to an F32 GGUF
once per session, plus a Q8_0 copy of it) for the vision tests.

Environment:
  EDGELLAMA_BIN       the edgellama binary (default: target/release/edgellama)
  EDGELLAMA_TESTDATA  test data folder (default: .cache/testdata)
Servers listen on 127.0.0.1 only, on ports the OS picks free.
"""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
VISION_DIR_NAME = "tiny-mllama"
VISION_IMAGES = ROOT / "crates" / "models" / "tests" / "golden" / "mllama"


def binary():
    return Path(os.environ.get("EDGELLAMA_BIN", ROOT / "target" / "release" / "edgellama"))


def testdata():
    return Path(os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache" / "testdata"))


def model_path():
    p = testdata() / MODEL_NAME
    if not p.is_file():
        pytest.fail(f"{p} is missing: run scripts/fetch-testdata.sh")
    return p


def vision_model_dir():
    """The tiny vision checkpoint in Hugging Face's layout."""
    p = testdata() / VISION_DIR_NAME
    if not (p / "config.json").is_file():
        pytest.fail(f"{p} is missing: run scripts/fetch-testdata.sh")
    return p


def edgellama(*args):
    """Runs an edgellama subcommand to completion; fails the test on error."""
    exe = binary()
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: cargo build --release -p edgellama-cli")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"edgellama {' '.join(map(str, args))} failed ({r.returncode}):\n"
                    f"{r.stdout}{r.stderr}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, model=None):
        exe = binary()
        if not exe.is_file():
            pytest.fail(f"{exe} is missing: cargo build --release -p edgellama-cli")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(ROOT / "target" / f"openai-tests-server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [str(exe), "serve", "-m", str(model or model_path()), "--host", "127.0.0.1",
             "--port", str(self.port), "-t", "2", *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                pytest.fail("the server did not come up within 60 s")
            time.sleep(0.2)

    def metrics(self, headers=None):
        req = urllib.request.Request(self.base + "/metrics", headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    s = Server("--parallel", "16", "-c", "16384")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed_server():
    """One slot, no waiting room and an API key: for the error paths."""
    s = Server("--parallel", "1", "-c", "256", "--max-queue", "0", "--api-key", "sk-edge")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory):
    """The tiny vision checkpoint as GGUF files: {"f32": path, "q8_0": path}."""
    d = tmp_path_factory.mktemp("vision")
    f32, q8 = d / "tiny-mllama-f32.gguf", d / "tiny-mllama-q8_0.gguf"
    edgellama("convert", vision_model_dir(), "-o", f32, "--outtype", "f32")
    edgellama("quantize", f32, q8, "Q8_0")
    return {"f32": f32, "q8_0": q8}


@pytest.fixture(scope="session")
def vision_server(vision_models):
    """The F32 tiny vision model (reported as tiny-mllama-f32.gguf)."""
    s = Server("--parallel", "4", "-c", "2048", model=vision_models["f32"])
    yield s
    s.stop()


@pytest.fixture(scope="session")
def vision_q8_server(vision_models):
    """The Q8_0 copy, letting image parts name files under the golden images' folder."""
    s = Server("--parallel", "2", "-c", "1024", "--allow-image-path", VISION_IMAGES,
               model=vision_models["q8_0"])
    yield s
    s.stop()
