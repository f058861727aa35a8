#!/usr/bin/env python3
"""The cache huggingface_hub itself lays out for a few downloads.

A minimal hub (the same answers as the Rust stand-in: HEAD/GET on
/{repo}/resolve/{rev}/{file}, LFS files redirected to a CDN address with
X-Linked-Etag/X-Linked-Size, other files answered directly with their git
blob sha1 as ETag, X-Repo-Commit on both) runs on 127.0.0.1; huggingface_hub's
hf_hub_download fetches the files into an empty cache, and every entry of the
cache is recorded: folders, files (with their sha256), symlinks (with their
targets) and refs (with their contents).

Rerun:
    python3 crates/hub/tests/golden/hf_cache_layout.py > crates/hub/tests/golden/hf_cache_layout.json
with huggingface_hub==2.4.0.
"""
import hashlib
import http.server
import json
import os
import sys
import tempfile
import threading

REPO = "org/tiny-GGUF"
COMMIT = "5f1e2d3c4b5a69788796a5b4c3d2e1f001122334"


def content(n, seed):
    return bytes((i * 7 + seed) % 251 for i in range(n))


# (path, size, seed, lfs): the Rust test builds the same files.
FILES = [
    ("tiny-Q4_K_M.gguf", 100_000, 1, True),
    ("sub/nested-Q8_0.gguf", 5_000, 2, True),
    ("config.json", 300, 3, False),
]
DATA = {p: content(n, s) for p, n, s, _ in FILES}
LFS = {p: lfs for p, _, _, lfs in FILES}


def git_sha1(b):
    return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()


def sha256(b):
    return hashlib.sha256(b).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        path = self.path.split("?")[0]
        port = self.server.server_address[1]
        prefix = "/" + REPO + "/resolve/"
        if path.startswith("/cdn/"):
            sha = path[len("/cdn/"):]
            for p, b in DATA.items():
                if sha256(b) == sha:
                    return self.body(b, head)
            return self.send_error(404)
        if path.startswith(prefix):
            rev, _, file = path[len(prefix):].partition("/")
            if rev not in ("main", COMMIT) or file not in DATA:
                return self.send_error(404)
            b = DATA[file]
            if LFS[file]:
                self.send_response(302)
                self.send_header("Location", "http://localhost:%d/cdn/%s" % (port, sha256(b)))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", '"%s"' % sha256(b))
                self.send_header("X-Linked-Size", str(len(b)))
                self.send_header("ETag", '"%s"' % sha256(b))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.extra = {"X-Repo-Commit": COMMIT, "ETag": '"%s"' % git_sha1(b)}
            return self.body(b, head)
        self.send_error(404)

    def body(self, b, head):
        self.send_response(200)
        for k, v in getattr(self, "extra", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(b)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(b)


def tree(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out.append({"path": rel, "kind": "symlink", "target": os.readlink(p)})
            elif os.path.isdir(p):
                out.append({"path": rel, "kind": "dir"})
            else:
                with open(p, "rb") as f:
                    b = f.read()
                entry = {"path": rel, "kind": "file"}
                if "/refs/" in "/" + rel:
                    entry["text"] = b.decode()
                elif rel.endswith(".lock"):
                    pass
                else:
                    entry["sha256"] = sha256(b)
                out.append(entry)
    return sorted(out, key=lambda e: e["path"])


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HF_ENDPOINT"] = "http://127.0.0.1:%d" % server.server_address[1]
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ.pop("HF_TOKEN", None)
        import huggingface_hub

        paths = {}
        for p, _, _, _ in FILES:
            got = huggingface_hub.hf_hub_download(REPO, p, cache_dir=cache, token=False)
            paths[p] = os.path.relpath(got, cache)
        result = {
            "huggingface_hub": huggingface_hub.__version__,
            "repo": REPO,
            "commit": COMMIT,
            "files": [{"path": p, "size": n, "seed": s, "lfs": lfs} for p, n, s, lfs in FILES],
            "returned": paths,
            "tree": tree(cache),
        }
    server.shutdown()
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
