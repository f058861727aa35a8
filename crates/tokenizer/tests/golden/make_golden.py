#!/usr/bin/env python3
"""Reference token ids and pre-tokenizer splits for the edgellama-tokenizer tests.

Rerun from the repository root after scripts/fetch-testdata.sh:

    python3 crates/tokenizer/tests/golden/make_golden.py [TESTDATA_DIR]

TESTDATA_DIR defaults to $EDGELLAMA_TESTDATA, else .cache/testdata.
Pinned versions used: tokenizers==0.23.3 (Hugging Face), gguf==0.19.0 (gguf-py),
Python 3. The script refuses to run with another tokenizers version.

Everything is deterministic (fixed seeds); rerunning gives identical files.

Outputs, next to this script:
  corpus.json          the test strings (generated below, >= 1,000)
  llama32_hf.json      ids from Meta's Llama 3.2 tokenizer.json, loaded as is
  llama_bpe_gguf.json  ids for ggml-vocab-llama-bpe.gguf (Llama 3 vocabulary)
  smollm2_gguf.json    ids for SmolLM2-135M-Instruct.Q4_1.gguf
  gpt2_gguf.json       ids for ggml-vocab-gpt-2.gguf
  pretok.json          how Hugging Face pre-tokenizers split random strings

For the GGUF files there is no tokenizer.json, so one is rebuilt with the
`tokenizers` library from the GGUF's own tokens, token types and merges (read
with gguf-py): a BPE model over all tokens, the merges in file order, every
control token (type 3) added as a special token, and the pre-tokenizer that
llama.cpp's src/llama-vocab.cpp uses for the file's `tokenizer.ggml.pre`:
  - llama-bpe -> LLAMA3 regex; llama.cpp also sets ignore_merges = true for it,
    so the rebuilt model does too (Meta's 3.2 tokenizer.json says false; on
    this corpus both give the same ids, which the script prints).
  - smollm    -> LLAMA_VOCAB_PRE_TYPE_SMOLLM: regexes "\\p{N}" then the GPT-2
    regex. In Hugging Face terms that is SmolLM2's own tokenizer.json
    pre-tokenizer: Sequence[Digits(individual_digits=true),
    ByteLevel(add_prefix_space=false, use_regex=true)] (each digit isolated,
    then the GPT-2 regex on the rest), with ignore_merges = false.
  - gpt-2     -> ByteLevel(add_prefix_space=false, use_regex=true).
The BPE algorithm, added-token matching and pre-tokenization all run in
`tokenizers`; only the vocabulary data comes from the GGUF.

Each ids file holds, per corpus string, space-separated ids for
  plain:   encode(s, add_special_tokens=False) with encode_special_tokens=True,
           i.e. special-token text is plain text (our parse_special=false);
  special: the same with special tokens recognised (our parse_special=true).
llama32_hf.json also holds Hugging Face's decode of the `special` ids with and
without skip_special_tokens.

pretok.json: random strings from a pool of awkward characters (all White_Space
chars, contraction letters in both cases and U+017F, digits of several
scripts, combining marks, emoji, unassigned and private-use code points), and
the pieces each pre-tokenizer cuts them into:
  llama3:  the pre_tokenizer of Meta's tokenizer.json (Split + ByteLevel);
  gpt2:    ByteLevel(use_regex=true);
  smollm:  Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)];
  default: llama.cpp's fallback regexes "[\\p{P}\\$\\+<=>\\^~\\|]+", the GPT-2
           regex, "\\p{N}+", "[0-9][0-9][0-9]", each as an isolating Split.
Pieces come from the offsets Hugging Face reports, so they are raw text.
"""

import json
import os
import random
import sys
from pathlib import Path

import tokenizers
from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

if tokenizers.__version__ != "0.23.3":
    sys.exit(f"need tokenizers==0.23.3, have {tokenizers.__version__}")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
DATA = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EDGELLAMA_TESTDATA", ROOT / ".cache/testdata"))

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT2_REGEX_NO_TAIL = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

# ---------------------------------------------------------------- corpus

SENTENCES = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "I can't believe it's already Friday; we'll see what happens.",
        "She said, \"Don't touch that!\" and walked away.",
        "Large language models predict the next token given the previous ones.",
        "In 1969, Apollo 11 landed on the Moon at 20:17 UTC.",
        "Wait... what? Are you SERIOUS?!",
    ],
    "de": [
        "Die Straßenbahn fährt um 7:45 Uhr über die Brücke.",
        "Größere Häuser kosten mehr Geld, aber sie sind schöner.",
        "Donaudampfschifffahrtsgesellschaftskapitän ist ein langes Wort.",
        "Können Sie mir bitte sagen, wo der Bahnhof ist?",
        "Äpfel, Öl und Übermut – alles zusammen für 12,50 €.",
    ],
    "fr": [
        "L'été dernier, nous sommes allés à la plage près de Nice.",
        "Où est la bibliothèque ? Je ne la trouve pas.",
        "C'est l'histoire d'un garçon qui s'appelait Théo.",
        "Les élèves français étudient l'œuvre de Molière.",
        "« Bonjour », dit-il, « comment ça va ? »",
    ],
    "it": [
        "Perché non andiamo al mare domani? È una bella giornata.",
        "L'Italia è famosa per la pizza, la pasta e il caffè.",
        "Più tardi ci vediamo all'università.",
        "Dov'è la stazione? Sono già le quattro e mezza.",
    ],
    "pt": [
        "Não sei se ele vai chegar a tempo para o almoço.",
        "A educação é a base de uma sociedade justa.",
        "Você já visitou São Paulo ou o Rio de Janeiro?",
        "Ação, coração e informação terminam em -ção.",
    ],
    "hi": [
        "नमस्ते, आप कैसे हैं?",
        "भारत एक विशाल और विविधतापूर्ण देश है।",
        "मुझे हिंदी सीखना बहुत पसंद है।",
        "कृपया दरवाज़ा बंद कर दीजिए।",
        "आज का तापमान ३५ डिग्री सेल्सियस है।",
    ],
    "es": [
        "¿Dónde está la biblioteca? ¡No la encuentro!",
        "El niño comió una manzana y después jugó fútbol.",
        "Mañana iremos a la montaña con nuestros amigos.",
        "La ciudad de México tiene más de 9.000.000 de habitantes.",
    ],
    "th": [
        "สวัสดีครับ วันนี้อากาศดีมาก",
        "ประเทศไทยมีชื่อเสียงเรื่องอาหารอร่อย",
        "ฉันชอบกินข้าวผัดกับต้มยำกุ้ง",
        "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
        "ราคา ๑๒๕ บาท",
    ],
}

CODE = [
    'def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{v:?}");\n}\n',
    '#include <stdio.h>\n\nint main(void) {\n\tprintf("hello, world\\n");\n\treturn 0;\n}\n',
    'const add = (a, b) => a + b;\nconsole.log(`sum: ${add(2, 3)}`);\n',
    '<div class="box" id=\'main\'>\n  <p>Hello &amp; welcome!</p>\n</div>',
    'SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name ORDER BY n DESC;',
    '#!/bin/bash\nfor f in *.txt; do\n  echo "$f" | tr a-z A-Z >> out.log\ndone\n',
    '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\"c"}}',
    'public class Hello {\r\n    public static void main(String[] args) {\r\n        System.out.println("Hi");\r\n    }\r\n}\r\n',
    'x = [i**2 for i in range(100) if i % 3 == 0]  # squares\n',
    'impl<T: Clone + Send> Foo<T> where T: \'static {}\n',
    '    \n\t\t// indented comment with trailing spaces   \n',
    'if (a != b && c <= d || !e) { x += 1; } else { x -= 1; }',
    '$ git commit -m "fix: handle \\r\\n line endings"',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("héllo")\n}\n',
]

EMOJI = [
    "👍", "👍🏿", "👍🏻 👍🏼 👍🏽 👍🏾", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🏴‍☠️", "❤️", "❤️‍🔥",
    "🇺🇸🇩🇪🇫🇷🇮🇹🇵🇹🇮🇳🇪🇸🇹🇭", "🇬🇧", "1️⃣2️⃣3️⃣", "#️⃣", "🧑‍🤝‍🧑", "😀😃😄😁😆😅😂🤣",
    "I love it 😍!!", "🐍 + 🦀 = ❤", "🫠🫡🫶", "👁️‍🗨️", "🤷‍♂️🤷‍♀️",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456789012345678901234567890",
    "3.14159265358979", "-0.5", "1e-9", "6.022e23", "1,234,567", "1,234,567.89",
    "1.234.567,89", "1 234 567", "1'234'567", "$1,000,000", "€9.99", "100%",
    "2024-01-31", "12:30:45", "+1 (555) 123-4567", "v1.2.3", "0x1F4A", "0b1011",
    "३५ + ७ = ४२", "๑๒๓๔๕", "１２３４５", "Ⅻ", "½ ¾ ⅞", "²³", "call 911 now", "abc123def456",
    "3 + 4 = 7", "99 bottles", "1000000000000", "007", "2^64 = 18446744073709551616",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n", "\n ", " \t \n ",
    "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a \n b", "a\r\nb", "a \r\n b",
    "  leading", "trailing  ", "  both  ", "\n\nnewlines first", "end with newline\n",
    "tab\t\tseparated\tvalues", "mixed \t\n\r\n spaces", "word\u00a0nbsp", "ideographic\u3000space",
    "line\u2028separator", "para\u2029graph", "a \u200b b", "\u00a0\u00a0x", "x\u00a0\u00a0",
    "    four spaces", "a" + " " * 17 + "b", "\n" * 9 + "x", "\t" * 5, " !", "  !", "\n!", "\t!",
]

CONTRACTIONS = [
    "DON'T", "it'S", "I'M", "we'LL", "They'RE", "you'VE", "he'D", "can't", "won't", "Y'ALL",
    "'s", "'S", "'t", "'re", "'RE", "'ve", "'Ve", "'m", "'ll", "'Ll", "'d", "'D", "''s", "x''ll",
    "rock 'n' roll", "'tis", "o'clock", "ma'am", "ſ'ſ", "it'ſ", "'sure'", "I'd've", "don’t",
    "DON'T YOU DARE", "It's JOHN'S", "'''", "' s", "it ' s",
]

SPECIAL_TEXT = [
    "<|eot_id|>",
    "<|begin_of_text|>Hello",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "text<|eot_id|>more text",
    "<|end_of_text|>",
    "<|eom_id|><|python_tag|>",
    "<|image|>describe",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_7|>",
    "<|im_start|>user\nhello<|im_end|>\n",
    "<|endoftext|>",
    "<|eot_id",
    "<<|eot_id|>>",
    "<|eot_id|><|eot_id|>",
    "< |eot_id| >",
    "<|EOT_ID|>",
    "<repo_name>x<file_sep>",
    "<|im_start|><|im_start|>",
    " <|eot_id|> ",
]

EDGE = [
    "", "a", "A", ".", "'", "\u0301", "e\u0301", "\u0301\u0301a", "a\u0301\u0302\u0303",
    "\u0915\u094d\u0937", "\u0e01\u0e34\u0e4d", "\ufeffBOM", "\x00", "\x01\x02\x1f", "\x7f",
    "zero\u200dwidth\u200cjoiner", "\u2066isolate\u2069", "\ue000private", "\U0010fffd", "\u0378",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ｆｕｌｌｗｉｄｔｈ", "ÅΩK", "İstanbul", "straße STRASSE", "ǅ ǈ ǋ",
    "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε",
    "שלום עולם", "مرحبا بالعالم", "ελληνικά123", "a" * 300, "ab" * 200, "!" * 50, "?!" * 30,
    "....", "---", "___init___", "~~~", "|||", "@@@", "https://example.com/path?q=1&r=2#frag",
    "user@example.com", "C:\\Windows\\System32", "/usr/local/bin", "a.b.c", "e.g.", "U.S.A.",
]

# Words that are Llama 3 tokens but that the merges alone do not rebuild, so
# ignore_merges changes their ids (found by encoding every vocabulary entry).
IGNORE_MERGES = [
    " việc", " hợp", " nhiều", " điều", " Việt", "ektedir", "mektedir", " ایران", " характ",
    " використ", " každ", "lardan",
    "Tôi làm việc ở Việt Nam, nhiều điều hợp lý.",
    "Bu konuda değişiklik gerekmektedir; onlardan biri.",
    "Для використання характеристик.",
]


def corpus():
    rng = random.Random(20240131)
    out = []
    for lang in SENTENCES.values():
        out.extend(lang)
    out += CODE + EMOJI + NUMBERS + WHITESPACE + CONTRACTIONS + SPECIAL_TEXT + EDGE + IGNORE_MERGES

    all_sentences = [s for v in SENTENCES.values() for s in v]
    seps = [" ", "  ", "\n", "\n\n", "\t", " \n", "\r\n", "", ". ", " - "]
    # Mixed-language paragraphs with varied separators and casing.
    for _ in range(260):
        parts = rng.sample(all_sentences, rng.randint(1, 4))
        case = rng.random()
        if case < 0.15:
            parts = [p.upper() for p in parts]
        elif case < 0.25:
            parts = [p.lower() for p in parts]
        s = ""
        for p in parts:
            s += p + rng.choice(seps)
        out.append(s)
    # Sentences with pieces of the other categories spliced in.
    pools = [EMOJI, NUMBERS, WHITESPACE, CONTRACTIONS, SPECIAL_TEXT, EDGE[:40], CODE]
    for _ in range(260):
        base = rng.choice(all_sentences)
        words = base.split(" ")
        for _ in range(rng.randint(1, 3)):
            pool = rng.choice(pools)
            frag = rng.choice(pool)
            if len(frag) > 80:
                frag = frag[:80]
            words.insert(rng.randint(0, len(words)), frag)
        out.append(rng.choice([" ", "", "  ", "\n"]).join(words))
    # Character soup: random runs drawn from every category.
    soup = "".join(EMOJI) + "".join(NUMBERS) + "".join(WHITESPACE) + "".join(CONTRACTIONS)
    soup += "".join(EDGE[:60]) + "".join(all_sentences) + "<|>_"
    soup_chars = sorted(set(soup))
    for _ in range(300):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(soup_chars) for _ in range(n)))
    # Long code and text blocks.
    for _ in range(20):
        out.append("".join(rng.sample(CODE, 3)))
    return out


# ---------------------------------------------------------------- pretok strings

POOL = (
    list("abcXYZsStTrReEvVmMlLdD") + ["\u017f", "\u212a", "é", "ß", "Ω", "я", "中", "ก", "\u0e34", "क", "\u094d"]
    + list("0123456789") + ["\u0661", "\u0967", "\u0e51", "\uff11", "\u2163", "\u00bd", "\u00b2"]
    + list(" \t\n\r\x0b\x0c") + ["\x85", "\xa0", "\u1680", "\u2000", "\u2009", "\u200a", "\u2028", "\u2029",
                                 "\u202f", "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff"]
    + list("'''\"!?.,;:-_()[]{}<>|=+$^~`@#%&*/\\") + ["\u2019", "\u00ab", "\u2014", "\u3002", "\u00bf"]
    + ["\u0301", "\u0308", "\u20e3", "\ufe0f", "\u200d", "👍", "🏿", "🇺", "😀"]
    + ["\u0378", "\ue000", "\x00", "\x7f", "\U000e0001", "\U0010fffd"]
)


def pretok_strings():
    rng = random.Random(7)
    out = []
    for _ in range(2000):
        n = rng.randint(1, 24)
        # Bias towards repeats so runs of one class (and long whitespace) appear.
        s = []
        for _ in range(n):
            if s and rng.random() < 0.35:
                s.append(s[-1])
            else:
                s.append(rng.choice(POOL))
        out.append("".join(s))
    return out


# ---------------------------------------------------------------- references


def read_gguf_vocab(path):
    r = GGUFReader(str(path))
    f = r.fields

    def get(key):
        return f[key].contents() if key in f else None

    return {
        "tokens": get("tokenizer.ggml.tokens"),
        "types": get("tokenizer.ggml.token_type"),
        "merges": get("tokenizer.ggml.merges"),
        "pre": get("tokenizer.ggml.pre"),
    }


def tokenizer_from_gguf(path, pre_tokenizer, ignore_merges):
    v = read_gguf_vocab(path)
    vocab = {t: i for i, t in enumerate(v["tokens"])}
    assert len(vocab) == len(v["tokens"]), "duplicate token texts"
    merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
    tk = Tokenizer(BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tk.pre_tokenizer = pre_tokenizer
    tk.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(v["tokens"], v["types"]) if ty == 3]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    for t in control:
        assert tk.token_to_id(t) == vocab[t]
    return tk, v["pre"]


def encode_both(tk, texts):
    tk.encode_special_tokens = True
    plain = [" ".join(map(str, tk.encode(s, add_special_tokens=False).ids)) for s in texts]
    tk.encode_special_tokens = False
    special = [" ".join(map(str, tk.encode(s, add_special_tokens=False).ids)) for s in texts]
    return plain, special


def write(name, obj):
    with open(HERE / name, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=0)
        fh.write("\n")


def pieces(pt, s):
    got = [s[a:b] for _, (a, b) in pt.pre_tokenize_str(s)]
    assert "".join(got) == s, (s, got)
    return got


def main():
    for f in ["llama3.2-tokenizer.json", "ggml-vocab-llama-bpe.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf",
              "ggml-vocab-gpt-2.gguf"]:
        if not (DATA / f).exists():
            sys.exit(f"missing {DATA / f}: run scripts/fetch-testdata.sh")

    texts = corpus()
    assert len(texts) >= 1000, len(texts)
    write("corpus.json", texts)

    meta = Tokenizer.from_file(str(DATA / "llama3.2-tokenizer.json"))
    plain, special = encode_both(meta, texts)
    ids = [[int(x) for x in s.split()] for s in special]
    write("llama32_hf.json", {
        "source": "llama3.2-tokenizer.json via tokenizers==0.23.3",
        "plain": plain,
        "special": special,
        "decode_special": [meta.decode(i, skip_special_tokens=False) for i in ids],
        "decode_skip_special": [meta.decode(i, skip_special_tokens=True) for i in ids],
    })

    llama3_pre = meta.pre_tokenizer
    tk, pre = tokenizer_from_gguf(DATA / "ggml-vocab-llama-bpe.gguf", llama3_pre, True)
    assert pre == "llama-bpe", pre
    p, s = encode_both(tk, texts)
    tk_nm, _ = tokenizer_from_gguf(DATA / "ggml-vocab-llama-bpe.gguf", llama3_pre, False)
    p_nm, _ = encode_both(tk_nm, texts)
    print("llama-bpe: strings where ignore_merges changes the ids:", sum(a != b for a, b in zip(p, p_nm)))
    write("llama_bpe_gguf.json", {"source": "ggml-vocab-llama-bpe.gguf rebuilt in tokenizers==0.23.3",
                                  "plain": p, "special": s})

    smol_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk, pre = tokenizer_from_gguf(DATA / "SmolLM2-135M-Instruct.Q4_1.gguf", smol_pre, False)
    assert pre == "smollm", pre
    p, s = encode_both(tk, texts)
    write("smollm2_gguf.json", {"source": "SmolLM2-135M-Instruct.Q4_1.gguf rebuilt in tokenizers==0.23.3",
                                "plain": p, "special": s})

    gpt2_pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk, pre = tokenizer_from_gguf(DATA / "ggml-vocab-gpt-2.gguf", gpt2_pre, False)
    assert pre == "gpt-2", pre
    p, s = encode_both(tk, texts)
    write("gpt2_gguf.json", {"source": "ggml-vocab-gpt-2.gguf rebuilt in tokenizers==0.23.3",
                             "plain": p, "special": s})

    default_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\p{P}\$\+<=>\^~\|]+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(GPT2_REGEX_NO_TAIL), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\p{N}+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[0-9][0-9][0-9]"), behavior="isolated"),
    ])
    strs = pretok_strings() + texts
    write("pretok.json", {
        "strings": strs,
        "llama3": [pieces(llama3_pre, x) for x in strs],
        "gpt2": [pieces(gpt2_pre, x) for x in strs],
        "smollm": [pieces(smol_pre, x) for x in strs],
        "default": [pieces(default_pre, x) for x in strs],
    })
    print(f"{len(texts)} corpus strings, {len(strs)} pre-tokenizer strings")


if __name__ == "__main__":
    main()
