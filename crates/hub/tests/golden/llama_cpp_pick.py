#!/usr/bin/env python3
"""Which file llama.cpp's `-hf ORG/NAME[:QUANT]` picks, recorded from llama.cpp itself.

For each case, a Hugging Face cache holding the case's files is laid out
(refs/main, snapshots/{commit}/...) and llama.cpp is run offline on it
(`llama-perplexity -hf ... --offline`); the file it then tries to load is
the pick (the files are not real models, so loading fails right after).
This checks both the pick (find_best_model) and that llama.cpp reads this
cache layout.

Rerun:
    python3 crates/hub/tests/golden/llama_cpp_pick.py LLAMA_CPP_BIN_DIR > crates/hub/tests/golden/llama_cpp_pick.json
with LLAMA_CPP_BIN_DIR the build/bin folder of the llama.cpp tree vendored in
the llama-cpp-python==0.3.36 sdist (its llama-perplexity).

Only cases where llama.cpp's answer does not depend on directory order are
listed: it walks the cache folder in the file system's order.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

COMMIT = "0123456789abcdef0123456789abcdef01234567"

CASES = [
    (["m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-F16.gguf", "README.md"], None, None),
    (["m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-F16.gguf"], "q8_0", None),
    (["m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-F16.gguf"], "F16", None),
    (["m-Q8_0.gguf", "m-F16.gguf"], None, None),
    (["m-F16.gguf", "README.md"], None, None),
    (["m-F16.gguf"], "Q4_K_M", None),
    (["mmproj-m-Q4_K_M.gguf", "m-Q5_K_M.gguf"], None, None),
    (["mmproj-m-F16.gguf", "m-imatrix.gguf"], None, None),
    (["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"], None, None),
    (["m-Q4_K_M-00002-of-00002.gguf", "m-Q4_K_M-00001-of-00002.gguf", "m-Q8_0.gguf"], "Q8_0", None),
    (["m-Q8_0-00002-of-00003.gguf", "m-Q8_0-00001-of-00003.gguf", "m-Q8_0-00003-of-00003.gguf"], "q8_0", None),
    (["Q4_K_M/m-Q4_K_M.gguf", "m-Q8_0.gguf"], None, None),
    (["SmolLM2-135M-Instruct.Q4_1.gguf"], "Q4_1", None),
    (["m-IQ4_XS.gguf", "m-Q4_0.gguf"], "iq4_xs", None),
    (["m-UD-Q4_K_XL.gguf", "m-Q8_0.gguf"], "UD-Q4_K_XL", None),
    (["m-q4_k_m.gguf"], None, None),
    (["m-IQ4_K_M.gguf"], "Q4_K_M", None),
    (["m-BF16.gguf", "m-imatrix.gguf"], None, None),
    (["llama-3.2-1b-instruct-q4_k_m.gguf"], None, None),
    (["a-Q4_K_M.gguf", "b-Q8_0.gguf"], None, "b-Q8_0.gguf"),
    (["a-Q4_K_M.gguf"], None, "c.gguf"),
    (["m-Q4_K_Mx.gguf"], "Q4_K_M", None),
]

LOAD = re.compile(r"failed to load model from (\S+)")
NO_FILE = re.compile(r"no GGUF files found in repository|not found in repository")


def pick(bin_dir, files, quant, hf_file):
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "models--org--m")
        snap = os.path.join(repo, "snapshots", COMMIT)
        os.makedirs(os.path.join(repo, "refs"))
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(COMMIT)
        for name in files:
            p = os.path.join(snap, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write("not a model\n")
        arg = "org/m" + (":" + quant if quant else "")
        cmd = [os.path.join(bin_dir, "llama-perplexity"), "-hf", arg, "--offline", "-p", "x"]
        if hf_file:
            cmd += ["-hff", hf_file]
        env = dict(os.environ, HF_HUB_CACHE=tmp)
        env.pop("LLAMA_CACHE", None)
        # llama.cpp's log thread sometimes loses its last lines at exit:
        # run again until one of the two outcomes shows.
        for _ in range(20):
            out = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
            log = out.stdout + out.stderr
            m = LOAD.search(log)
            if m:
                return os.path.relpath(m.group(1), snap)
            if NO_FILE.search(log):
                return None
        raise RuntimeError("no outcome in llama.cpp's log for %r" % (cmd,))


def main():
    bin_dir = sys.argv[1]
    cases = []
    for files, quant, hf_file in CASES:
        cases.append(
            {"files": files, "quant": quant, "hf_file": hf_file, "picked": pick(bin_dir, files, quant, hf_file)}
        )
    json.dump({"llama_cpp": "llama-cpp-python==0.3.36 vendor/llama.cpp", "cases": cases}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
