use aho_corasick::{AhoCorasick, MatchKind};

use crate::bpe::{Bpe, FastMap};
use crate::bytes;
use crate::error::{Result, TokenizerError};
use crate::pretok::PreTokenizer;
use crate::spec::{SpecialIds, TokenType, TokenizerSpec};
use crate::stream::StreamDecoder;

/// Token texts that end generation, from llama.cpp's `llama-vocab.cpp`
/// (`special_eog_ids`): any token with one of these texts is an EOG token and
/// is treated as a control token.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// Candidates for the end-of-turn token when the metadata names none, most
/// specific first (llama.cpp's list).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Fill-in-the-middle padding / repository / file-separator tokens, which
/// llama.cpp also counts as end of generation.
const FIM_EOG_TEXTS: &[&[&str]] = &[
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

struct Token {
    text: String,
    kind: TokenType,
}

/// Matches added tokens in raw text before pre-tokenization.
struct AddedMatcher {
    ac: AhoCorasick,
    /// Token id of each pattern.
    ids: Vec<u32>,
    strip: Vec<(bool, bool)>,
}

enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A byte-level BPE tokenizer (Llama 3, SmolLM, GPT-2 style).
///
/// Built from a GGUF file ([`Tokenizer::from_gguf`]) or a Hugging Face
/// `tokenizer.json` ([`Tokenizer::from_hf_json`]); encodes exactly as the
/// Hugging Face `tokenizers` library and llama.cpp do for these vocabularies.
pub struct Tokenizer {
    tokens: Vec<Token>,
    text_to_id: FastMap<String, u32>,
    /// Decoded bytes of every token, concatenated; `piece_offs[id]..piece_offs[id + 1]`.
    pieces: Vec<u8>,
    piece_offs: Vec<usize>,
    pre: PreTokenizer,
    bpe: Bpe,
    /// All added tokens (control, unknown, user-defined).
    added_all: Option<AddedMatcher>,
    /// Only the added tokens that are matched even without `parse_special`.
    added_user: Option<AddedMatcher>,
    special: SpecialIds,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("pre", &self.pre)
            .field("special", &self.special)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

// The engine shares one tokenizer between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
};

impl AsRef<Tokenizer> for Tokenizer {
    fn as_ref(&self) -> &Tokenizer {
        self
    }
}

fn first_with_text(tokens: &[Token], texts: &[&str]) -> Option<u32> {
    texts.iter().find_map(|t| {
        tokens
            .iter()
            .position(|tok| tok.text == *t)
            .and_then(|i| u32::try_from(i).ok())
    })
}

impl Tokenizer {
    /// Builds a tokenizer from a filled-in [`TokenizerSpec`].
    pub fn from_spec(spec: TokenizerSpec) -> Result<Self> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::InvalidVocab("empty vocabulary".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::InvalidVocab(format!(
                "{n} tokens do not fit u32 ids"
            )));
        }
        let check = |what: &str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(i) if i as usize >= n => Err(TokenizerError::InvalidVocab(format!(
                    "{what} id {i} out of range (vocabulary has {n} tokens)"
                ))),
                other => Ok(other),
            }
        };
        let mut special = spec.special;
        special.bos = check("bos", special.bos)?;
        special.eos = check("eos", special.eos)?;
        special.eot = check("eot", special.eot)?;
        special.eom = check("eom", special.eom)?;
        special.pad = check("pad", special.pad)?;
        special.unk = check("unk", special.unk)?;

        let strip: Vec<(bool, bool)> = spec.tokens.iter().map(|t| (t.lstrip, t.rstrip)).collect();
        let mut tokens: Vec<Token> = spec
            .tokens
            .into_iter()
            .map(|t| Token {
                text: t.text,
                kind: t.kind,
            })
            .collect();

        // End-of-generation tokens and roles found by text, following llama.cpp.
        let mut eog: Vec<u32> = Vec::new();
        for group in FIM_EOG_TEXTS {
            eog.extend(first_with_text(&tokens, group));
        }
        for (i, tok) in tokens.iter_mut().enumerate() {
            if EOG_TEXTS.contains(&tok.text.as_str()) {
                eog.push(i as u32);
                // A token that ends generation must never come out of plain text.
                tok.kind = TokenType::Control;
            }
        }
        if special.eot.is_none() {
            special.eot = first_with_text(&tokens, EOT_TEXTS);
        }
        if special.eom.is_none() {
            special.eom = first_with_text(&tokens, &["<|eom_id|>"]);
        }
        for id in [special.eos, special.eot, special.eom]
            .into_iter()
            .flatten()
        {
            eog.push(id);
        }
        eog.sort_unstable();
        eog.dedup();

        let mut text_to_id: FastMap<String, u32> = FastMap::default();
        text_to_id.reserve(n);
        for (i, t) in tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp's token_to_id.
            text_to_id.insert(t.text.clone(), i as u32);
        }

        let mut pieces = Vec::new();
        let mut piece_offs = Vec::with_capacity(n + 1);
        for t in &tokens {
            piece_offs.push(pieces.len());
            match t.kind {
                TokenType::Normal => pieces.extend(bytes::decode(&t.text)),
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    pieces.extend_from_slice(t.text.as_bytes())
                }
                TokenType::Byte => pieces.extend(byte_token_value(&t.text)),
                TokenType::Unused | TokenType::Undefined => {}
            }
        }
        piece_offs.push(pieces.len());

        let bpe = build_bpe(&tokens, &text_to_id, &spec.merges, spec.ignore_merges);
        let added_all = build_matcher(&tokens, &strip, |k| k.is_added())?;
        let added_user = build_matcher(&tokens, &strip, |k| k == TokenType::UserDefined)?;

        Ok(Tokenizer {
            tokens,
            text_to_id,
            pieces,
            piece_offs,
            pre: spec.pre,
            bpe,
            added_all,
            added_user,
            special,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            eog,
        })
    }

    /// Token ids of `text`.
    ///
    /// `add_special` prepends BOS (and appends EOS) when the model asks for it
    /// (`tokenizer.ggml.add_bos_token` / the tokenizer.json post-processor),
    /// like llama.cpp's `add_special`. `parse_special` lets control tokens
    /// written in the text (`"<|eot_id|>"`) become their ids; otherwise they
    /// are tokenized as plain text. User-defined added tokens are always
    /// matched, as in both references.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.special.bos);
        }
        let matcher = if parse_special {
            self.added_all.as_ref()
        } else {
            self.added_user.as_ref()
        };
        let mut words = Vec::new();
        for seg in split_added(text, matcher) {
            match seg {
                Segment::Token(id) => out.push(id),
                Segment::Text(s) => {
                    words.clear();
                    self.pre.split_into(s, &mut words);
                    for w in &words {
                        self.bpe.encode_word(w.as_bytes(), &mut out);
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    /// The text of `ids`. Control tokens give their text only with `special`;
    /// ids outside the vocabulary give nothing. Bytes that do not form valid
    /// UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut buf = Vec::new();
        for &id in ids {
            buf.extend_from_slice(self.piece(id, special));
        }
        match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The bytes token `id` stands for, control tokens included (as their
    /// text); empty for an id outside the vocabulary. One token may hold part
    /// of a UTF-8 character: use [`StreamDecoder`] to print as you go.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        self.piece(id, true).to_vec()
    }

    /// The bytes of token `id`, borrowed; control tokens give nothing unless
    /// `special`.
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        let i = id as usize;
        let Some(tok) = self.tokens.get(i) else {
            return &[];
        };
        if !special && matches!(tok.kind, TokenType::Control | TokenType::Unknown) {
            return &[];
        }
        match (self.piece_offs.get(i), self.piece_offs.get(i + 1)) {
            (Some(&a), Some(&b)) => self.pieces.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// A decoder that turns ids into text one at a time without splitting
    /// UTF-8 characters.
    pub fn stream_decoder(&self, special: bool) -> StreamDecoder<&Tokenizer> {
        StreamDecoder::new(self, special)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.special.eos
    }

    pub fn eot_id(&self) -> Option<u32> {
        self.special.eot
    }

    pub fn eom_id(&self) -> Option<u32> {
        self.special.eom
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.special.pad
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.special.bos.is_some()
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos && self.special.eos.is_some()
    }

    /// Every token that ends generation, sorted: EOS, end of turn, end of
    /// message and the other texts llama.cpp treats as such.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The id of the token stored as `text`: raw text for added tokens
    /// (`"<|eot_id|>"`), byte-level form for BPE pieces (`"Ġthe"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// The stored text of token `id` (see [`Tokenizer::token_id`]).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|t| t.text.as_str())
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.tokens.get(id as usize).map(|t| t.kind)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == Some(TokenType::Control)
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }
}

/// The byte of a `<0xAB>` byte token; any other text is used as it is.
fn byte_token_value(text: &str) -> Vec<u8> {
    text.strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .filter(|h| h.len() == 2)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .map_or_else(|| bytes::decode(text), |b| vec![b])
}

fn build_bpe(
    tokens: &[Token],
    text_to_id: &FastMap<String, u32>,
    merges: &[(String, String)],
    ignore_merges: bool,
) -> Bpe {
    let mut byte_ids = [None; 256];
    for (b, slot) in byte_ids.iter_mut().enumerate() {
        *slot = text_to_id.get(&bytes::BYTE_CHARS[b].to_string()).copied();
    }
    let mut table: FastMap<u64, (u32, u32)> = FastMap::default();
    table.reserve(merges.len());
    let mut joined = String::new();
    for (rank, (a, b)) in merges.iter().enumerate() {
        let (Some(&ia), Some(&ib)) = (text_to_id.get(a), text_to_id.get(b)) else {
            continue;
        };
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        // A rule whose result is not a token cannot fire (Hugging Face
        // refuses such files; llama.cpp would fall back to bytes).
        let Some(&merged) = text_to_id.get(&joined) else {
            continue;
        };
        // The first (highest-priority) rule for a pair wins.
        table
            .entry(Bpe::pair_key(ia, ib))
            .or_insert((rank as u32, merged));
    }
    let whole_words = ignore_merges.then(|| {
        let mut m: FastMap<Box<[u8]>, u32> = FastMap::default();
        for (i, t) in tokens.iter().enumerate() {
            if t.kind == TokenType::Normal {
                m.entry(bytes::decode(&t.text).into_boxed_slice())
                    .or_insert(i as u32);
            }
        }
        m
    });
    Bpe::new(table, byte_ids, whole_words)
}

fn build_matcher(
    tokens: &[Token],
    strip: &[(bool, bool)],
    want: impl Fn(TokenType) -> bool,
) -> Result<Option<AddedMatcher>> {
    let mut pats = Vec::new();
    let mut ids = Vec::new();
    let mut flags = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if want(t.kind) && !t.text.is_empty() {
            pats.push(t.text.as_str());
            ids.push(i as u32);
            flags.push(strip.get(i).copied().unwrap_or((false, false)));
        }
    }
    if pats.is_empty() {
        return Ok(None);
    }
    // Leftmost-longest, as Hugging Face's AddedVocabulary matches.
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&pats)
        .map_err(|e| TokenizerError::InvalidVocab(format!("added tokens: {e}")))?;
    Ok(Some(AddedMatcher {
        ac,
        ids,
        strip: flags,
    }))
}

fn split_added<'a>(text: &'a str, matcher: Option<&AddedMatcher>) -> Vec<Segment<'a>> {
    let Some(m) = matcher else {
        return vec![Segment::Text(text)];
    };
    let mut out = Vec::new();
    let mut last = 0;
    for mat in m.ac.find_iter(text) {
        if mat.start() < last {
            // Inside whitespace the previous token swallowed.
            continue;
        }
        let (lstrip, rstrip) = m.strip[mat.pattern().as_usize()];
        let mut start = mat.start();
        if lstrip {
            let before = &text[last..start];
            start = last + before.trim_end().len();
        }
        if start > last {
            out.push(Segment::Text(&text[last..start]));
        }
        out.push(Segment::Token(m.ids[mat.pattern().as_usize()]));
        last = mat.end();
        if rstrip {
            let after = &text[last..];
            last += after.len() - after.trim_start().len();
        }
    }
    if last < text.len() {
        out.push(Segment::Text(&text[last..]));
    }
    out
}
