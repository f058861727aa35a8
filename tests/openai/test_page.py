"""The chat page at `/` in headless Chromium, driven as a person would use
it: type a message, press Enter, watch the reply stream in.

Chromium is Debian's package (`apt-get install chromium`), driven over the
DevTools protocol on a loopback port.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

ROOT = Path(__file__).resolve().parents[2]


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is missing: apt-get install -y chromium")
    return exe


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="edgellama-chromium-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
             "--window-size=900,700", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.close()
                pytest.fail("chromium did not start")
            time.sleep(0.2)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def type_text(self, text):
        for ch in text:
            self.call("Input.dispatchKeyEvent", type="keyDown", text=ch)
            self.call("Input.dispatchKeyEvent", type="keyUp")

    def press_enter(self):
        self.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter",
                  windowsVirtualKeyCode=13, text="\r")
        self.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter",
                  windowsVirtualKeyCode=13)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def wait_for(browser, expr, seconds, what):
    deadline = time.time() + seconds
    while True:
        v = browser.eval(expr)
        if v:
            return v
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_chat_page_streams_a_reply(server, browser):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=server.base + "/")
    wait_for(browser, "document.readyState === 'complete' && !!document.getElementById('input')",
             20, "the page")
    # The page sends no length limit and the server samples at random, so a
    # first reply can run until the context is full and leave no room for
    # the second turn. Cap each reply, as a user's max_tokens would: the
    # page's own request body goes out with that one field added.
    browser.eval(
        "(() => { const f = window.fetch; window.fetch = (url, opts) => {"
        " const b = JSON.parse(opts.body); b.max_tokens = 96;"
        " return f(url, Object.assign({}, opts, { body: JSON.stringify(b) })); }; return true })()")
    browser.eval("document.getElementById('input').focus()")
    browser.type_text("What is the capital of France?")
    assert browser.eval("document.getElementById('input').value") == "What is the capital of France?"
    browser.press_enter()
    # The reply grows while it streams: catch it part-way, then finished.
    seen = set()
    deadline = time.time() + 60
    while True:
        state = browser.eval(
            "(() => { const m = document.querySelector('.msg.assistant, .msg.error');"
            " return m ? [m.dataset.state, m.textContent] : null })()")
        if state:
            seen.add(state[1])
            if state[0] != "streaming":
                break
        assert time.time() < deadline, "the reply did not finish"
        time.sleep(0.01)
    assert state[0] == "done", state
    reply = state[1]
    assert reply.strip(), "empty reply"
    partial = [t for t in seen if t and t != reply]
    assert partial, "the reply appeared at once, not streamed"
    assert all(reply.startswith(p) for p in partial)
    assert browser.eval("document.querySelector('.msg.user').textContent") == \
        "What is the capital of France?"
    # A second turn keeps the conversation.
    browser.type_text("Thanks!")
    browser.press_enter()
    wait_for(browser, "document.querySelectorAll('.msg.assistant').length === 2 &&"
             " document.querySelectorAll('.msg.assistant')[1].dataset.state === 'done'", 60,
             "the second reply")
    shot = browser.call("Page.captureScreenshot", format="png")
    out = ROOT / "target" / "chat-page.png"
    out.write_bytes(base64.b64decode(shot["data"]))
