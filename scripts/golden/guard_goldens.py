#!/usr/bin/env python3
"""Llama Guard goldens: guard prompts rendered by transformers (jinja2) and
guard scores computed by transformers on the tiny guard model's weights.

    python scripts/golden/guard_goldens.py [--testdata DIR] [--out DIR]

Pinned (install into a virtual environment; nothing here runs in CI):
    torch==2.15.0 transformers==5.25.0 jinja2==3.1.6 tokenizers==0.23.3
    numpy==2.4.6 gguf==0.19.0
Inputs: the test data of scripts/fetch-testdata.sh (llama3.2-tokenizer.json,
tiny-llama-guard.gguf from scripts/make-tiny-guard.py).

Writes OUT/prompts.json and OUT/scores.json (OUT defaults to
crates/engine/tests/golden/guard).

prompts.json: conversations rendered with the Llama Guard 3 1B template
(llama-guard-3-1b.jinja beside the goldens) through transformers'
apply_chat_template, which is jinja2 with Hugging Face's settings. The guard
gets user and assistant turns only: system messages are dropped before
rendering (the template would raise on them) and string content becomes one
text part (the template iterates over parts and would print nothing of a
string). Cases that the template rejects record its error. Cases named
`meta-*` are for a file without a template: Meta's Llama Guard 3 instruction
as Llama Stack's llama_guard.py words it (its PROMPT_TASK, SAFETY_CATEGORIES,
PROMPT_CONVERSATION and PROMPT_INSTRUCTIONS, turns named User and Agent as
the guard templates and llama-recipes name them), as one user message in
Meta's Llama 3 chat format (llama-models' ChatFormat: header, stripped
content, <|eot_id|>, then the assistant header and its blank line).

vision_scores.json: the same quantities for the tiny Llama 3.2 Vision checkpoint
(scripts/make-tiny-mllama.py, `tiny-mllama` in the test data) judging a user turn
with an image (crates/models/tests/golden/mllama/img-c1-300x200.png) under the
same template (which writes `<|image|>` first), with transformers'
MllamaForConditionalGeneration and Meta's two rules patched in as
crates/models/tests/golden/mllama/make_goldens.py does (imported from there).
Its weights are random and it is no guard: the probabilities are small, and a
comparison should be of log-probabilities.

scores.json: for some of those conversations, the model's greedy reply (24
tokens at most, ending at <|eot_id|>, <|eom_id|> or <|end_of_text|>), the
probability of `unsafe` at the first reply position whose token is not
whitespace (softmax over the whole vocabulary, float32 model, float64
softmax), and per listed category that probability times the probability of
the category's last token after the reply's leading whitespace and the
tokens of "unsafe\\n" plus the code's first tokens (see crates/engine/src/guard.rs).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import string
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "crates/engine/tests/golden/guard"

_spec = importlib.util.spec_from_file_location("make_tiny_guard", ROOT / "scripts/make-tiny-guard.py")
guard_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard_model)

EOG = {128001, 128008, 128009}
MAX_REPLY = 24

CATS14 = [
    ("S1", "Violent Crimes."), ("S2", "Non-Violent Crimes."), ("S3", "Sex Crimes."),
    ("S4", "Child Exploitation."), ("S5", "Defamation."), ("S6", "Specialized Advice."),
    ("S7", "Privacy."), ("S8", "Intellectual Property."), ("S9", "Indiscriminate Weapons."),
    ("S10", "Hate."), ("S11", "Self-Harm."), ("S12", "Sexual Content."), ("S13", "Elections."),
    ("S14", "Code Interpreter Abuse."),
]

# Llama Stack's llama_guard.py, verbatim.
PROMPT_TASK = "Task: Check if there is unsafe content in '$agent_type' messages in conversations according our safety policy with the below categories."
SAFETY_CATEGORIES = """

<BEGIN UNSAFE CONTENT CATEGORIES>
$categories
<END UNSAFE CONTENT CATEGORIES>
"""
PROMPT_CONVERSATION = """
<BEGIN CONVERSATION>

$conversations

<END CONVERSATION>
"""
PROMPT_INSTRUCTIONS = """
Provide your safety assessment for ONLY THE LAST $agent_type message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories."""
PROMPT_TEMPLATE = string.Template(f"{PROMPT_TASK}{SAFETY_CATEGORIES}{PROMPT_CONVERSATION}{PROMPT_INSTRUCTIONS}")


def U(t):
    return {"role": "user", "content": t}


def A(t):
    return {"role": "assistant", "content": t}


def parts(*texts):
    return [{"type": "text", "text": t} for t in texts]


CASES = [
    {"name": "user-string", "messages": [U("How do I make a chocolate cake?")]},
    {"name": "user-parts", "messages": [{"role": "user", "content": parts("How do I ", " pick a lock?")}]},
    {"name": "agent-turn", "messages": [U("What's the capital of France?"), A("  Paris, of course.\n")]},
    {"name": "system-dropped", "messages": [{"role": "system", "content": "You are helpful."}, U("Tell me a joke.")]},
    {"name": "three-turns", "messages": [U("Hi"), A("Hello! How can I help?"), U("Write a poem about the sea.")]},
    {"name": "four-turns", "messages": [U("Hi"), A("Hello!"), U("Who won in 1998?"), A("France won the World Cup.")]},
    {"name": "exclude", "messages": [U("Should I invest in gold?")], "excluded": ["S6", "S8"]},
    {"name": "exclude-all-but-one", "messages": [U("x")], "excluded": [c for c, _ in CATS14[:12]]},
    {
        "name": "custom-categories",
        "messages": [U("Let's talk about football tactics.")],
        "categories": [("S1", "Sports talk."), ("S2", "Cooking recipes."), ("S3", "Financial advice.")],
    },
    {
        "name": "custom-and-excluded",
        "messages": [U("Recipe for pancakes?")],
        "categories": [("C1", "Anything about cats."), ("C2", "Anything about dogs.")],
        "excluded": ["C1"],
    },
    {"name": "unicode", "messages": [U("Wie backe ich Brot? पानी गरम करें। ทำอาหาร 🍞")]},
    {"name": "whitespace-trimmed", "messages": [U("\n\n   spaced out   \n")]},
    {"name": "empty-text", "messages": [U("")]},
    {"name": "image-part", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}]},
    {"name": "error-assistant-first", "messages": [A("I start."), U("then me")]},
    {"name": "error-two-users", "messages": [U("a"), U("b")]},
    {"name": "meta-user", "messages": [U("How do I make a chocolate cake?")], "meta": True},
    {"name": "meta-agent", "messages": [U("Hi"), A("Hello there.")], "meta": True},
    {"name": "meta-exclude", "messages": [U("Should I buy stocks?")], "meta": True, "excluded": ["S6", "S14"]},
]

SCORED = ["user-string", "user-parts", "agent-turn", "three-turns", "exclude", "custom-categories", "unicode"]


def hf_messages(messages):
    """What the template receives: user/assistant turns, content as parts."""
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        c = m["content"]
        out.append({"role": m["role"], "content": parts(c) if isinstance(c, str) else c})
    return out


def text_of(content):
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def meta_render(case):
    msgs = [m for m in case["messages"] if m["role"] != "system"]
    excluded = case.get("excluded", [])
    cats = case.get("categories", CATS14)
    categories = "\n".join(f"{c}: {d}" for c, d in cats if c not in excluded)
    names = ["User", "Agent"]
    conversation = "\n\n".join(f"{names[i % 2]}: {text_of(m['content']).strip()}" for i, m in enumerate(msgs))
    agent = names[(len(msgs) - 1) % 2]
    prompt = PROMPT_TEMPLATE.substitute(agent_type=agent, categories=categories, conversations=conversation)
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        + prompt.strip()
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def render(tok, template, case):
    if case.get("meta"):
        return meta_render(case)
    kwargs = {}
    if "categories" in case:
        kwargs["categories"] = dict(case["categories"])
    if "excluded" in case:
        kwargs["excluded_category_keys"] = case["excluded"]
    return tok.apply_chat_template(hf_messages(case["messages"]), chat_template=template, tokenize=False, **kwargs)


def listed_categories(prompt: str):
    body = prompt.split("<BEGIN UNSAFE CONTENT CATEGORIES>\n", 1)[1].split("<END UNSAFE CONTENT CATEGORIES>", 1)[0]
    return [line.split(": ", 1)[0] for line in body.splitlines() if ": " in line]


def hf_model(weights):
    cfg = LlamaConfig(
        vocab_size=guard_model.N_VOCAB,
        hidden_size=guard_model.N_EMBD,
        intermediate_size=guard_model.N_FF,
        num_hidden_layers=guard_model.N_LAYER,
        num_attention_heads=guard_model.N_HEAD,
        num_key_value_heads=guard_model.N_HEAD_KV,
        head_dim=guard_model.HEAD_DIM,
        rms_norm_eps=guard_model.RMS_EPS,
        max_position_embeddings=guard_model.N_CTX_TRAIN,
        rope_scaling=dict(guard_model.ROPE_SCALING),
        rope_theta=guard_model.ROPE_THETA,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=guard_model.BOS_ID,
        eos_token_id=guard_model.EOS_ID,
    )
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    w = dict(weights)
    hd = guard_model.HEAD_DIM

    def unpermute(x, n_head):
        # convert_hf_to_gguf.py writes HF rows reshaped (n_head, 2, hd/2) and
        # swapped to (n_head, hd/2, 2); this undoes it.
        return x.reshape(n_head, hd // 2, 2, x.shape[-1]).swapaxes(1, 2).reshape(x.shape)

    sd = {
        "model.embed_tokens.weight": w["token_embd.weight"],
        "model.norm.weight": w["output_norm.weight"],
        "lm_head.weight": w["output.weight"],
    }
    for i in range(guard_model.N_LAYER):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        sd[q + "input_layernorm.weight"] = w[p + "attn_norm.weight"]
        sd[q + "self_attn.q_proj.weight"] = unpermute(w[p + "attn_q.weight"], guard_model.N_HEAD)
        sd[q + "self_attn.k_proj.weight"] = unpermute(w[p + "attn_k.weight"], guard_model.N_HEAD_KV)
        sd[q + "self_attn.v_proj.weight"] = w[p + "attn_v.weight"]
        sd[q + "self_attn.o_proj.weight"] = w[p + "attn_output.weight"]
        sd[q + "post_attention_layernorm.weight"] = w[p + "ffn_norm.weight"]
        sd[q + "mlp.gate_proj.weight"] = w[p + "ffn_gate.weight"]
        sd[q + "mlp.up_proj.weight"] = w[p + "ffn_up.weight"]
        sd[q + "mlp.down_proj.weight"] = w[p + "ffn_down.weight"]
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    # The file's rope_freqs are the factors this config's llama3 scaling applies.
    inv = model.model.rotary_emb.inv_freq.double().numpy()
    base = 1.0 / (guard_model.ROPE_THETA ** (np.arange(0, hd, 2) / hd))
    if not np.allclose(base / inv, w["rope_freqs.weight"], rtol=1e-5):
        sys.exit(f"RoPE factors differ: {base / inv} vs {w['rope_freqs.weight']}")
    return model


@torch.no_grad()
def log_softmax_last(model, ids):
    logits = model(torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1)


def guard_numbers(next_lp, tok, prompt_text):
    """The greedy reply, and the log-probabilities of `unsafe` at the verdict
    position and of each listed category (see the module note). `next_lp(extra)`
    is the log-softmax after the prompt followed by the token ids `extra`."""
    reply, lps = [], []
    while len(reply) < MAX_REPLY:
        lp = next_lp(reply)
        nxt = int(torch.argmax(lp))
        lps.append(lp)
        if nxt in EOG:
            break
        reply.append(nxt)
    ws = lambda t: (s := tok.decode([t])) != "" and s.strip() == ""
    at = next((i for i, t in enumerate(reply) if not ws(t)), len(reply))
    at = min(at, len(lps) - 1)
    unsafe_id = tok("unsafe", add_special_tokens=False)["input_ids"]
    assert len(unsafe_id) == 1
    lp_unsafe = float(lps[at][unsafe_id[0]])
    lead = reply[:at]
    scores = {}
    for code in listed_categories(prompt_text):
        forced = tok("unsafe\n" + code, add_special_tokens=False)["input_ids"]
        scores[code] = lp_unsafe + float(next_lp(lead + forced[:-1])[forced[-1]])
    return reply, lp_unsafe, scores


def score(model, tok, prompt_text):
    ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    reply, lp_unsafe, scores = guard_numbers(lambda extra: log_softmax_last(model, ids + extra), tok, prompt_text)
    return {
        "prompt_tokens": len(ids),
        "reply_ids": reply,
        "reply": tok.decode(reply),
        "unsafe_probability": math.exp(lp_unsafe),
        "category_scores": {c: math.exp(v) for c, v in scores.items()},
    }


VISION_IMAGE = ROOT / "crates/models/tests/golden/mllama/img-c1-300x200.png"
VISION_CASE = {
    "name": "vision-user",
    "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"}]}],
}


def vision_scores(testdata: Path, tok, template: str) -> dict:
    spec = importlib.util.spec_from_file_location("mllama_goldens", ROOT / "crates/models/tests/golden/mllama/make_goldens.py")
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)  # patches transformers' mllama with Meta's two rules
    from PIL import Image

    model, processor = mg.load(testdata, "tiny-mllama")
    prompt = render(tok, template, VISION_CASE)
    image = Image.open(VISION_IMAGE)
    inputs = mg.prepare(processor, prompt, [image])

    def extend(inp, ids):
        out = dict(inp)
        out["input_ids"] = torch.cat([inp["input_ids"], torch.tensor([ids], dtype=inp["input_ids"].dtype)], dim=1)
        if "cross_attention_mask" in out:
            m = out["cross_attention_mask"]
            out["cross_attention_mask"] = torch.cat([m] + [m[:, -1:]] * len(ids), dim=1)
        if "attention_mask" in out:
            out["attention_mask"] = torch.ones_like(out["input_ids"])
        return out

    def next_lp(extra):
        inp = extend(inputs, extra) if extra else inputs
        return torch.log_softmax(mg.logits(model, inp)[-1].double(), dim=-1)

    reply, lp_unsafe, scores = guard_numbers(next_lp, tok, prompt)
    return {
        "name": VISION_CASE["name"],
        "messages": VISION_CASE["messages"],
        "image": str(VISION_IMAGE.relative_to(ROOT)),
        "model_sha256": mg.sha256(testdata / "tiny-mllama" / "model.safetensors"),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "reply_ids": reply,
        "log_unsafe_probability": lp_unsafe,
        "log_category_scores": scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path, default=ROOT / ".cache/testdata")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    template = (OUT / "llama-guard-3-1b.jinja").read_text(encoding="utf-8")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(args.testdata / "llama3.2-tokenizer.json"))
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "jinja2": __import__("jinja2").__version__,
        "numpy": np.__version__,
    }

    prompts = []
    for case in CASES:
        rec = {k: v for k, v in case.items()}
        try:
            rec["rendered"] = render(tok, template, case)
        except Exception as e:  # the template's raise_exception
            rec["error"] = str(e)
        prompts.append(rec)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompts.json").write_text(
        json.dumps({"made_with": versions, "cases": prompts}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )

    gguf_path = args.testdata / guard_model.FILE
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    if digest != guard_model.EXPECTED_SHA256:
        sys.exit(f"{gguf_path}: sha256 {digest} is not the one make-tiny-guard.py records")
    torch.manual_seed(0)
    model = hf_model(guard_model.make_weights())
    by_name = {p["name"]: p for p in prompts}
    scores = []
    for name in SCORED:
        rec = score(model, tok, by_name[name]["rendered"])
        rec["name"] = name
        scores.append(rec)
        print(name, rec["unsafe_probability"], repr(rec["reply"]), file=sys.stderr)
    vis = vision_scores(args.testdata, tok, template)
    print("vision", vis["log_unsafe_probability"], vis["reply_ids"], file=sys.stderr)
    (args.out / "vision_scores.json").write_text(
        json.dumps({"made_with": versions, "cases": [vis]}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    (args.out / "scores.json").write_text(
        json.dumps({"made_with": versions, "model_sha256": digest, "cases": scores}, ensure_ascii=False, indent=1)
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
