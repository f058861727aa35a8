"""The chat page at `/` in headless Chromium, driven as a person would use
it: type a message, press Enter, watch the reply stream in; attach images
(the file picker, a drop, a paste) on the tiny vision model.

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


def open_page(browser, server):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=server.base + "/")
    wait_for(browser, "document.readyState === 'complete' && !!document.getElementById('input')",
             20, "the page")


def add_to_requests(browser, fields):
    """Adds `fields` to each request body the page sends (as a user's own
    settings would) and keeps the bodies in `window.sentBodies`."""
    browser.eval(
        "(() => { const f = window.fetch; window.sentBodies = [];"
        " window.fetch = (url, opts) => { if (!opts || !opts.body) return f(url, opts);"
        f" const b = Object.assign(JSON.parse(opts.body), {json.dumps(fields)});"
        " window.sentBodies.push(b);"
        " return f(url, Object.assign({}, opts, { body: JSON.stringify(b) })); }; return true })()")


def test_chat_page_streams_a_reply(server, browser):
    open_page(browser, server)
    # The page sends no length limit and the server samples at random, so a
    # first reply can run until the context is full and leave no room for
    # the second turn. Cap each reply, as a user's max_tokens would: the
    # page's own request body goes out with that one field added.
    add_to_requests(browser, {"max_tokens": 96})
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
    # The header names the model the page talks to.
    wait_for(browser, "document.getElementById('model').textContent", 10, "the model's name")
    assert browser.eval("document.getElementById('model').textContent") == \
        "SmolLM2-135M-Instruct.Q4_1.gguf"


GOLDEN = ROOT / "crates" / "models" / "tests" / "golden" / "mllama"


def js_file(path, name, mime):
    """A JS expression for a File holding the bytes of `path`."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"new File([Uint8Array.from(atob('{data}'), c => c.charCodeAt(0))],"
            f" {json.dumps(name)}, {{ type: {json.dumps(mime)} }})")


def test_chat_page_sends_images(vision_server, browser):
    open_page(browser, vision_server)
    wait_for(browser, "document.getElementById('model').textContent", 10, "the model's name")
    assert browser.eval("document.getElementById('model').textContent") == "tiny-mllama-f32.gguf"
    # Greedy and short: the reply is then transformers' for the same prompt
    # (case a of the mllama goldens, as tests/openai/test_vision.py checks).
    add_to_requests(browser, {"max_tokens": 8, "temperature": 0})
    # The file picker: set the file on the page's file input.
    png = GOLDEN / "img-a-40x30.png"
    doc = browser.call("DOM.getDocument")
    node = browser.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")
    browser.call("DOM.setFileInputFiles", files=[str(png)], nodeId=node["nodeId"])
    wait_for(browser, "(() => { const i = document.querySelector('#attachments img');"
             " return i && i.complete && i.naturalWidth === 40 })()", 10, "the thumbnail")
    browser.eval("document.getElementById('input').focus()")
    browser.type_text("Describe this.")
    browser.press_enter()
    wait_for(browser, "(() => { const m = document.querySelector('.msg.assistant, .msg.error');"
             " return m && m.dataset.state !== 'streaming' })()", 60, "the reply")
    state, reply = browser.eval(
        "(() => { const m = document.querySelector('.msg.assistant, .msg.error');"
        " return [m.dataset.state, m.textContent] })()")
    assert state == "done", reply
    assert reply.strip()
    # The conversation shows the image in the user's message, above its text;
    # the attachments are gone from the form.
    user = browser.eval(
        "(() => { const m = document.querySelector('.msg.user'); const i = m.querySelector('img');"
        " return { text: m.textContent, w: i && i.naturalWidth, h: i && i.naturalHeight,"
        " shown: i && i.getBoundingClientRect().height > 0 } })()")
    assert user == {"text": "Describe this.", "w": 40, "h": 30, "shown": True}
    assert browser.eval("document.getElementById('attachments').hidden") is True
    # What went out: the image as a data: URL of the file's own bytes, then the text.
    sent = browser.eval("window.sentBodies[0].messages")
    assert sent == [{"role": "user", "content": [
        {"type": "image_url",
         "image_url": {"url": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()}},
        {"type": "text", "text": "Describe this."}]}]

    # A paste and a drop attach images too; a file that is no image is refused
    # with a note; an attachment can be removed before sending.
    jpg, png2 = GOLDEN / "img-b-120x50.jpg", GOLDEN / "img-d2-64x48.png"
    browser.eval(
        "(() => { const dt = new DataTransfer();"
        f" dt.items.add({js_file(jpg, 'photo.jpg', 'image/jpeg')});"
        " document.getElementById('input').dispatchEvent(new ClipboardEvent('paste',"
        " { clipboardData: dt, bubbles: true, cancelable: true })); return true })()")
    browser.eval(
        "(() => { const dt = new DataTransfer();"
        f" dt.items.add({js_file(png2, 'drawing.png', 'image/png')});"
        " dt.items.add(new File(['hello'], 'notes.txt', { type: 'text/plain' }));"
        " for (const t of ['dragenter', 'dragover', 'drop'])"
        " document.getElementById('log').dispatchEvent(new DragEvent(t,"
        " { dataTransfer: dt, bubbles: true, cancelable: true })); return true })()")
    wait_for(browser, "document.querySelectorAll('#attachments img').length === 2", 10,
             "the pasted and dropped images")
    assert browser.eval("[...document.querySelectorAll('#attachments img')].map(i => i.alt)") == \
        ["photo.jpg", "drawing.png"]
    assert "notes.txt" in browser.eval("document.getElementById('note').textContent")
    assert browser.eval("document.body.classList.contains('dragging')") is False
    browser.eval("document.querySelector('#attachments .pending button').click()")
    assert browser.eval("[...document.querySelectorAll('#attachments img')].map(i => i.alt)") == \
        ["drawing.png"]
    # A large file (a 2000x1500 PNG of noise, some MB) goes out scaled down as
    # a JPEG of at most four 560x560 tiles' pixels.
    browser.eval(
        "(async () => { const c = document.createElement('canvas'); c.width = 2000; c.height = 1500;"
        " const g = c.getContext('2d'); const d = g.createImageData(2000, 1500);"
        " for (let i = 0; i < d.data.length; i++) d.data[i] = (i % 4 === 3) ? 255 : Math.random() * 256;"
        " g.putImageData(d, 0, 0);"
        " const blob = await new Promise((r) => c.toBlob(r, 'image/png'));"
        " window.bigSize = blob.size; const dt = new DataTransfer();"
        " dt.items.add(new File([blob], 'big.png', { type: 'image/png' }));"
        " document.body.dispatchEvent(new DragEvent('drop',"
        " { dataTransfer: dt, bubbles: true, cancelable: true })); return true })()")
    wait_for(browser, "document.querySelectorAll('#attachments img').length === 2", 20,
             "the large image")
    big = browser.eval(
        "(async () => { const i = document.querySelectorAll('#attachments img')[1]; await i.decode();"
        " return [window.bigSize, i.src.slice(0, 23), i.src.length, i.naturalWidth, i.naturalHeight] })()")
    assert big[0] > 4 << 20, big
    assert big[1] == "data:image/jpeg;base64,", big
    assert big[2] < big[0] / 2 and big[3] * big[4] <= 4 * 560 * 560 \
        and abs(big[3] / big[4] - 4 / 3) < 0.01, big
    browser.eval("document.querySelectorAll('#attachments .pending button')[1].click()")
    assert browser.eval("document.querySelectorAll('#attachments img').length") == 1
    # A second turn with that image: the conversation now holds two.
    browser.eval("document.getElementById('input').focus()")
    browser.type_text("And this?")
    browser.press_enter()
    wait_for(browser, "document.querySelectorAll('.msg.assistant, .msg.error').length === 2 &&"
             " document.querySelectorAll('.msg.assistant, .msg.error')[1].dataset.state !== 'streaming'",
             60, "the second reply")
    assert browser.eval("document.querySelectorAll('.msg.assistant')[1].dataset.state") == "done"
    assert browser.eval("document.querySelectorAll('.msg.user img').length") == 2
    second = browser.eval("window.sentBodies[1].messages")
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[0] == sent[0]
    assert second[2]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert second[2]["content"][1] == {"type": "text", "text": "And this?"}
    shot = browser.call("Page.captureScreenshot", format="png")
    (ROOT / "target" / "chat-page-images.png").write_bytes(base64.b64decode(shot["data"]))
    # The first reply was transformers' greedy continuation of case a (the
    # decoded golden ids; see test_vision.py).
    assert reply == (" weap Src weap Src(Action Trader/"
                     "***************************************************************************"
                     "\n malicious")


def test_chat_page_drops_old_turns_when_the_conversation_outgrows_the_context(server, browser):
    # 1024 positions per sequence: two long messages fit, a third does not.
    open_page(browser, server)
    add_to_requests(browser, {"max_tokens": 8, "temperature": 0})
    long = "Please remember this list of words: " + " ".join(["apple banana cherry"] * 130)

    def say(text, n_done):
        browser.eval(f"document.getElementById('input').value = {json.dumps(text)}; true")
        browser.eval("document.getElementById('input').focus()")
        browser.press_enter()
        wait_for(browser, "(() => { const m = [...document.querySelectorAll('.msg.assistant, .msg.error')];"
                 f" return m.length === {n_done} && m[{n_done - 1}].dataset.state !== 'streaming' }})()",
                 60, f"reply {n_done}")

    say(long + " (first)", 1)
    say(long + " (second)", 2)
    say(long + " (third)", 3)
    state = browser.eval("(() => { const m = document.querySelector('.msg.error');"
                         " return m ? m.textContent : null })()")
    assert state and "context" in state.lower(), state
    assert browser.eval("!!document.getElementById('drop-retry')")
    browser.eval("document.getElementById('drop-retry').click(); true")
    wait_for(browser, "(() => { const m = [...document.querySelectorAll('.msg.assistant')];"
             " return m.length === 3 && m[2].dataset.state === 'done' })()", 60, "the resent reply")
    # The oldest turn is greyed and left out of what was sent.
    assert browser.eval("document.querySelectorAll('.msg.dropped').length") == 2
    assert not browser.eval("document.querySelector('.msg.error')")
    last = browser.eval("window.sentBodies[window.sentBodies.length - 1].messages.map(m => m.content)")
    assert len(last) == 3 and last[0].endswith("(second)") and last[-1].endswith("(third)"), last
