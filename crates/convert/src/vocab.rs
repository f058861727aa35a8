//! `tokenizer.json` and `tokenizer_config.json` to GGUF vocabulary metadata,
//! as llama.cpp's converter writes a byte-level BPE vocabulary
//! (`TextModel._set_vocab_gpt2`, `get_vocab_base`, gguf-py's `SpecialVocab`).

use std::path::Path;

use edgellama_gguf::MetadataValue;
use edgellama_tokenizer::Tokenizer;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::ConvertError;

/// GGUF token types (`gguf.TokenType`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The probe text of `get_vocab_base_pre`: its token ids identify how a
/// tokenizer pre-splits text.
const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// sha256 of `str(token_ids)` -> `tokenizer.ggml.pre`, from the table of
/// convert_hf_to_gguf.py (`get_vocab_base_pre`), for the pre-tokenizers the
/// tokenizer crate implements; other hashes there need splitters it lacks.
const PRE_TOKENIZER_HASHES: [(&str, &str); 5] = [
    // meta-llama/Meta-Llama-3-8B (and every Llama 3.x)
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    // HuggingFaceTB/SmolLM-135M
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    // bigcode/starcoder2-3b
    (
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
        "starcoder",
    ),
    // openai-community/gpt2
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    // evilfreelancer/ruGPT3XL
    (
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
        "gpt-2",
    ),
];

/// The sha256 llama.cpp's converter computes for a tokenizer: of the Python
/// list text (`[128000, 198, ...]`) of the probe's ids, special tokens added.
pub fn pre_tokenizer_hash(tok: &Tokenizer) -> String {
    let ids = tok.encode(CHKTXT, true, true);
    let text = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Python truthiness of a JSON value.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `d.get('SpecialToken', {}).get('id')` of a template item.
fn template_special(item: Option<&Value>) -> Option<Value> {
    item?.get("SpecialToken")?.get("id").cloned()
}

/// `d.get('Sequence', {}).get('id')`.
fn template_sequence(item: Option<&Value>) -> Option<&str> {
    item?.get("Sequence")?.get("id")?.as_str()
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    a.unwrap_or(&Value::Null) == b.unwrap_or(&Value::Null)
}

/// `tokenizer_config[key] = value` when there is a config.
fn tc_set(tc: &mut Option<Map<String, Value>>, key: &str, value: Value) {
    if let Some(m) = tc.as_mut() {
        m.insert(key.to_owned(), value);
    }
}

/// Ordered key -> value, as Python dicts keep insertion order.
#[derive(Default)]
struct Ordered<T> {
    items: Vec<(String, T)>,
}

impl<T> Ordered<T> {
    fn get(&self, k: &str) -> Option<&T> {
        self.items.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
    fn contains(&self, k: &str) -> bool {
        self.get(k).is_some()
    }
    fn insert(&mut self, k: &str, v: T) {
        match self.items.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.items.push((k.to_owned(), v)),
        }
    }
    fn setdefault(&mut self, k: &str, v: T) {
        if !self.contains(k) {
            self.items.push((k.to_owned(), v));
        }
    }
}

enum ChatTemplate {
    One(String),
    /// `[{"name": ..., "template": ...}]`
    Named(Vec<Value>),
}

/// gguf-py's `SpecialVocab` with merges loaded: special token ids, whether
/// BOS/EOS/SEP are added, and the chat template.
struct SpecialVocab {
    types: Vec<&'static str>,
    ids: Ordered<u32>,
    add: Ordered<bool>,
    chat_template: Option<ChatTemplate>,
}

impl SpecialVocab {
    fn set_id(&mut self, kind: &str, id: Option<&Value>) -> Result<(), ConvertError> {
        let Some(Value::Number(n)) = id else {
            return Ok(());
        };
        let Some(v) = n.as_i64() else {
            return Ok(());
        };
        let id = u32::try_from(v).map_err(|_| ConvertError::BadSpecialToken {
            kind: kind.to_owned(),
            id: v,
        })?;
        self.ids.setdefault(kind, id);
        Ok(())
    }

    fn load(
        dir: &Path,
        tokenizer: &Value,
        tokenizer_config: Option<&Value>,
        config: &Value,
    ) -> Result<SpecialVocab, ConvertError> {
        let mut sv = SpecialVocab {
            types: vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"],
            ids: Ordered::default(),
            add: Ordered::default(),
            chat_template: None,
        };
        let empty = Vec::new();
        let added_tokens = tokenizer
            .get("added_tokens")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let mut tc: Option<Map<String, Value>> =
            tokenizer_config.and_then(Value::as_object).cloned();
        let tc_truthy =
            |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());

        if truthy(Some(tokenizer)) {
            let get = |tc: &Option<Map<String, Value>>, k: &str| {
                tc.as_ref().and_then(|m| m.get(k)).cloned()
            };
            let mut bos = get(&tc, "bos_token");
            let mut cls = get(&tc, "cls_token");
            let mut eos = get(&tc, "eos_token");
            let sep = get(&tc, "sep_token");
            if !truthy(bos.as_ref()) && truthy(cls.as_ref()) && tc_truthy(&tc) {
                bos = cls.clone();
                tc_set(&mut tc, "bos_token", Value::from(bos.clone()));
            }
            if !truthy(eos.as_ref()) && truthy(sep.as_ref()) && tc_truthy(&tc) {
                eos = sep.clone();
                tc_set(&mut tc, "eos_token", Value::from(eos.clone()));
            }
            let post = tokenizer.get("post_processor");
            if truthy(post) {
                let post = post.unwrap_or(&Value::Null);
                let processors = match post.get("processors").and_then(Value::as_array) {
                    Some(list) => list.iter().collect::<Vec<_>>(),
                    None => vec![post],
                };
                for p in processors {
                    match p.get("type").and_then(Value::as_str) {
                        Some("ByteLevel") => {
                            sv.add.setdefault("bos", false);
                            sv.add.setdefault("eos", false);
                        }
                        Some("RobertaProcessing") => {
                            sv.add.insert("bos", true);
                            sv.add.insert("eos", true);
                            sv.add.insert("sep", true);
                            let first = |k: &str, fallback: &Option<Value>| {
                                p.get(k)
                                    .and_then(Value::as_array)
                                    .and_then(|a| a.first().cloned())
                                    .or_else(|| fallback.clone())
                            };
                            if !truthy(cls.as_ref()) && tc_truthy(&tc) {
                                cls = first("cls", &bos);
                                tc_set(&mut tc, "cls_token", Value::from(cls.clone()));
                            }
                            if !truthy(sep.as_ref()) && tc_truthy(&tc) {
                                let s = first("sep", &eos);
                                tc_set(&mut tc, "sep_token", Value::from(s));
                            }
                        }
                        Some("TemplateProcessing") => {
                            sv.template_processing(p, &mut tc, &mut bos, &mut cls, &mut eos, &sep);
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(sv);
        };

        let alt = chat_template_files(dir)?;
        sv.chat_template = match tc.get("chat_template").cloned().or(alt) {
            Some(Value::String(s)) => Some(ChatTemplate::One(s)),
            Some(Value::Array(a)) => Some(ChatTemplate::Named(a)),
            _ => None,
        };
        let types = sv.types.clone();
        for kind in &types {
            if let Some(Value::Bool(b)) = tc.get(&format!("add_{kind}_token")) {
                sv.add.setdefault(kind, *b);
            }
            let content = match tc.get(&format!("{kind}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|t| t.get("content").and_then(Value::as_str) == Some(&content))
                .and_then(|t| t.get("id"));
            sv.set_id(kind, id)?;
        }
        // config.json: `{kind}_token_id`, at the top level or in text_config.
        for kind in &types {
            let key = format!("{kind}_token_id");
            let id = config
                .get(&key)
                .filter(|v| !v.is_null())
                .or_else(|| config.get("text_config").and_then(|t| t.get(&key)));
            sv.set_id(kind, id)?;
        }
        Ok(sv)
    }

    /// gguf-py's crude reading of a `TemplateProcessing` post-processor.
    fn template_processing(
        &mut self,
        p: &Value,
        tc: &mut Option<Map<String, Value>>,
        bos: &mut Option<Value>,
        cls: &mut Option<Value>,
        eos: &mut Option<Value>,
        sep: &Option<Value>,
    ) {
        let empty = Vec::new();
        let single = p.get("single").and_then(Value::as_array).unwrap_or(&empty);
        let pair = p.get("pair").and_then(Value::as_array).unwrap_or(&empty);
        let tc_truthy = tc.as_ref().is_some_and(|m| !m.is_empty());
        let mut first = None;
        let mut last = None;
        if single.len() > 1 {
            first = template_special(single.first()).filter(|v| truthy(Some(v)));
            if let Some(f) = &first {
                if !tc_truthy {
                    *bos = Some(f.clone());
                } else if !same(Some(f), bos.as_ref()) && !same(Some(f), cls.as_ref()) {
                    if !truthy(bos.as_ref()) {
                        *bos = Some(f.clone());
                        tc_set(tc, "bos_token", f.clone());
                    }
                    if !truthy(cls.as_ref()) {
                        *cls = Some(f.clone());
                        tc_set(tc, "cls_token", f.clone());
                    }
                }
                let adds = same(Some(f), bos.as_ref()) || same(Some(f), cls.as_ref());
                self.add.insert("bos", adds);
            }
            last = template_special(single.last()).filter(|v| truthy(Some(v)));
            if let Some(l) = &last {
                if !tc_truthy {
                    *eos = Some(l.clone());
                } else if !same(Some(l), eos.as_ref()) {
                    let old = eos.clone().unwrap_or(Value::Null);
                    if !self.types.contains(&"eot") {
                        self.types.push("eot");
                        tc_set(tc, "eot_token", old);
                    } else if !self.types.contains(&"eom") {
                        self.types.push("eom");
                        tc_set(tc, "eom_token", old);
                    }
                    *eos = Some(l.clone());
                    tc_set(tc, "eos_token", l.clone());
                }
                let adds = same(Some(l), eos.as_ref());
                self.add.insert("eos", adds);
            }
        }
        if pair.is_empty() {
            return;
        }
        let start = usize::from(
            first.is_some() && same(template_special(pair.first()).as_ref(), first.as_ref()),
        );
        let stop = if last.is_some() && same(template_special(pair.last()).as_ref(), last.as_ref())
        {
            pair.len().saturating_sub(1)
        } else {
            pair.len()
        };
        let pair = pair.get(start..stop.max(start)).unwrap_or(&[]);
        if pair.is_empty() {
            return;
        }
        let a = template_sequence(pair.first());
        let b = template_sequence(pair.last());
        if a != Some("A") || b != Some("B") || pair.len() < 3 {
            return;
        }
        let middle = &pair[1..pair.len() - 1];
        let mut add_sep = false;
        if let Some(entry) = template_special(middle.first()).filter(|v| truthy(Some(v))) {
            let known = same(Some(&entry), sep.as_ref()) || same(Some(&entry), eos.as_ref());
            if known && last.is_none() {
                add_sep = true;
            }
        }
        if middle.len() == 2 {
            if let Some(entry) = template_special(middle.get(1)).filter(|v| truthy(Some(v))) {
                if same(Some(&entry), sep.as_ref()) || same(Some(&entry), eos.as_ref()) {
                    add_sep = true;
                }
            }
        }
        self.add.insert("sep", add_sep);
        if add_sep && !truthy(sep.as_ref()) && tc_truthy {
            let e = eos.clone().unwrap_or(Value::Null);
            tc_set(tc, "sep_token", e);
        }
    }
}

/// `chat_template.jinja` (with `additional_chat_templates/*.jinja`) or
/// `chat_template.json`, used when tokenizer_config.json has no template.
fn chat_template_files(dir: &Path) -> Result<Option<Value>, ConvertError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ConvertError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let default = read(&jinja)?;
        let extra_dir = dir.join("additional_chat_templates");
        let mut extra = Vec::new();
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|source| ConvertError::Read {
                path: extra_dir.clone(),
                source,
            })?;
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "jinja") {
                    let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                    extra.push(serde_json::json!({"name": name, "template": read(&p)?}));
                }
            }
        }
        if extra.is_empty() {
            return Ok(Some(Value::String(default)));
        }
        extra.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        extra.insert(
            0,
            serde_json::json!({"name": "default", "template": default}),
        );
        return Ok(Some(Value::Array(extra)));
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let v = edgellama_gguf::formats::read_json(&json)?;
        return Ok(v.get("chat_template").cloned());
    }
    Ok(None)
}

/// The vocabulary metadata, in the order the converter writes it.
pub struct VocabInput<'a> {
    pub dir: &'a Path,
    /// `config.json` as written (not merged with defaults).
    pub config: &'a Value,
    pub vocab_size: u64,
    /// `None`: exactly `vocab_size` tokens, as llama.cpp's converter lists
    /// them. `Some(limit)`: as many as the tokenizer defines when that is
    /// more (mllama's `<|image|>` is id `vocab_size`: a real token with an
    /// embedding row but no output row); an id at or past `limit` (the
    /// embedding's rows) is refused.
    pub id_limit: Option<u64>,
}

pub fn vocab_metadata(
    input: &VocabInput<'_>,
) -> Result<Vec<(String, MetadataValue)>, ConvertError> {
    let dir = input.dir;
    let sp = dir.join("tokenizer.model");
    if sp.is_file() {
        return Err(ConvertError::UnsupportedTokenizer {
            what: format!(
                "{}: SentencePiece vocabularies are not supported, only byte-level BPE tokenizer.json",
                sp.display()
            ),
        });
    }
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ConvertError::MissingFile { path: tok_path });
    }
    let tokenizer_json = edgellama_gguf::formats::read_json(&tok_path)?;
    let tok_cfg_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tok_cfg_path.is_file() {
        Some(edgellama_gguf::formats::read_json(&tok_cfg_path)?)
    } else {
        None
    };
    let tok = Tokenizer::from_hf_json(&tok_path).map_err(|source| ConvertError::Tokenizer {
        path: tok_path.clone(),
        source,
    })?;

    let mut md: Vec<(String, MetadataValue)> = Vec::new();
    if let Some(Value::Bool(b)) = tokenizer_config
        .as_ref()
        .and_then(|c| c.get("add_prefix_space"))
    {
        md.push(("tokenizer.ggml.add_space_prefix".into(), (*b).into()));
    }

    let (tokens, types) = token_list(
        &tokenizer_json,
        &tok,
        &tok_path,
        input.vocab_size,
        input.id_limit,
    )?;
    let hash = pre_tokenizer_hash(&tok);
    let pre = PRE_TOKENIZER_HASHES
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| *name)
        .ok_or(ConvertError::UnknownPreTokenizer { hash })?;
    md.push(("tokenizer.ggml.model".into(), "gpt2".into()));
    md.push(("tokenizer.ggml.pre".into(), pre.into()));
    md.push(("tokenizer.ggml.tokens".into(), tokens.into()));
    md.push(("tokenizer.ggml.token_type".into(), types.into()));

    let merges = merges(&tokenizer_json, &tok_path)?;
    if !merges.is_empty() {
        md.push(("tokenizer.ggml.merges".into(), merges.into()));
    }
    let sv = SpecialVocab::load(
        dir,
        &tokenizer_json,
        tokenizer_config.as_ref(),
        input.config,
    )?;
    for (kind, id) in &sv.ids.items {
        let key = match kind.as_str() {
            "bos" => "bos_token_id",
            "eos" => "eos_token_id",
            "unk" => "unknown_token_id",
            "sep" => "seperator_token_id",
            "pad" => "padding_token_id",
            "mask" => "mask_token_id",
            "eot" => "eot_token_id",
            "eom" => "eom_token_id",
            // gguf-py has no key for the others (cls): it skips them.
            _ => continue,
        };
        set(&mut md, &format!("tokenizer.ggml.{key}"), (*id).into());
    }
    for (kind, v) in &sv.add.items {
        if matches!(kind.as_str(), "bos" | "eos" | "sep") {
            set(
                &mut md,
                &format!("tokenizer.ggml.add_{kind}_token"),
                (*v).into(),
            );
        }
    }
    match sv.chat_template {
        Some(ChatTemplate::One(t)) => set(&mut md, "tokenizer.chat_template", t.into()),
        Some(ChatTemplate::Named(list)) => {
            let mut default = None;
            let mut names = Vec::new();
            for choice in &list {
                let name: String = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(template) = choice.get("template").and_then(Value::as_str) else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(template.to_owned());
                } else {
                    set(
                        &mut md,
                        &format!("tokenizer.chat_template.{name}"),
                        template.into(),
                    );
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            if !names.is_empty() {
                // gguf-py lists a Python set here (arbitrary order); sorted is stable.
                names.sort();
                set(&mut md, "tokenizer.chat_templates", names.into());
            }
            if let Some(t) = default {
                set(&mut md, "tokenizer.chat_template", t.into());
            }
        }
        None => {}
    }
    // LlamaModel.set_vocab: SmolLM-style 49152-token vocabularies add no BOS.
    if input.vocab_size == 49152 {
        set(&mut md, "tokenizer.ggml.add_bos_token", false.into());
    }
    Ok(md)
}

/// Sets in place when present (as gguf-py overwrites a key), else appends.
fn set(md: &mut Vec<(String, MetadataValue)>, key: &str, v: MetadataValue) {
    match md.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => md.push((key.to_owned(), v)),
    }
}

/// `get_vocab_base`: every id below vocab_size (or, with `id_limit`, up to
/// the highest id defined), with its type.
fn token_list(
    tj: &Value,
    tok: &Tokenizer,
    path: &Path,
    vocab_size: u64,
    id_limit: Option<u64>,
) -> Result<(Vec<String>, Vec<i32>), ConvertError> {
    struct Added {
        special: bool,
        normalized: bool,
    }
    let bad = |what: &str| ConvertError::UnsupportedTokenizer {
        what: format!("{}: {what}", path.display()),
    };
    let n = usize::try_from(vocab_size).map_err(|_| ConvertError::TooLarge {
        what: "vocab_size".into(),
        value: vocab_size,
    })?;
    // Refuse a vocab_size that is not backed by tokens before allocating for it.
    let vocab = tj
        .pointer("/model/vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab is not an object"))?;
    let empty = Vec::new();
    let added = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let entries = vocab.len() + added.len();
    let (n, vocab_size) = match id_limit {
        None => (n, vocab_size),
        Some(limit) => {
            let highest = vocab
                .values()
                .chain(added.iter().filter_map(|t| t.get("id")))
                .filter_map(Value::as_u64)
                .max();
            match highest {
                Some(id) if id >= limit => {
                    return Err(ConvertError::VocabTooSmall {
                        path: path.to_owned(),
                        id,
                        vocab_size: limit,
                    })
                }
                Some(id) if id >= vocab_size => {
                    let n = usize::try_from(id + 1).map_err(|_| ConvertError::TooLarge {
                        what: "token id".into(),
                        value: id,
                    })?;
                    (n, id + 1)
                }
                _ => (n, vocab_size),
            }
        }
    };
    if n > 2 * entries + 1024 {
        return Err(ConvertError::BadConfig {
            path: path.to_owned(),
            message: format!("vocab_size {vocab_size} is far beyond the {entries} tokens defined"),
        });
    }
    let mut text: Vec<Option<String>> = vec![None; n];
    let mut info: Vec<Option<Added>> = (0..n).map(|_| None).collect();
    let mut place = |id: u64, s: &str| -> Result<usize, ConvertError> {
        let i = usize::try_from(id)
            .ok()
            .filter(|&i| i < n)
            .ok_or(ConvertError::VocabTooSmall {
                path: path.to_owned(),
                id,
                vocab_size,
            })?;
        text[i] = Some(s.to_owned());
        Ok(i)
    };
    for (s, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("token ids must be non-negative integers"))?;
        place(id, s)?;
    }
    for t in added {
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("added token without an id"))?;
        let content = t
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("added token without content"))?;
        let i = place(id, content)?;
        info[i] = Some(Added {
            special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
            normalized: t
                .get("normalized")
                .and_then(Value::as_bool)
                .unwrap_or(!t.get("special").and_then(Value::as_bool).unwrap_or(false)),
        });
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, (t, a)) in text.into_iter().zip(info).enumerate() {
        let Some(mut t) = t else {
            tokens.push(format!("[PAD{i}]"));
            types.push(UNUSED);
            continue;
        };
        match a {
            None => types.push(NORMAL),
            Some(a) => {
                // llama.cpp expects added tokens pre-normalized: the converter
                // round-trips non-normalized ones through the tokenizer.
                if !a.normalized {
                    t = tok.decode(&tok.encode(&t, false, true), true);
                }
                if a.special || looks_special(&t) {
                    types.push(CONTROL);
                } else {
                    t = t.replace('\u{2581}', " ");
                    types.push(USER_DEFINED);
                }
            }
        }
        tokens.push(t);
    }
    Ok((tokens, types))
}

/// `TextModel.does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `model.merges` as `"a b"` strings (pairs are joined, their spaces written
/// as U+0120 as gguf-py does).
fn merges(tj: &Value, path: &Path) -> Result<Vec<String>, ConvertError> {
    let Some(list) = tj.pointer("/model/merges").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let bad = || ConvertError::UnsupportedTokenizer {
        what: format!("{}: unknown merges format", path.display()),
    };
    match list.first() {
        None => Ok(Vec::new()),
        Some(Value::String(_)) => list
            .iter()
            .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(Value::Array(_)) => list
            .iter()
            .map(|m| {
                let pair = m.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
                let part = |v: &Value| -> Result<String, ConvertError> {
                    Ok(v.as_str().ok_or_else(bad)?.replace(' ', "\u{120}"))
                };
                Ok(format!("{} {}", part(&pair[0])?, part(&pair[1])?))
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn special(tokenizer: Value, config: Option<Value>) -> SpecialVocab {
        SpecialVocab::load(
            Path::new("/nonexistent"),
            &tokenizer,
            config.as_ref(),
            &json!({}),
        )
        .unwrap()
    }

    #[test]
    fn llama3_post_processor_adds_bos_not_eos_nor_sep() {
        let tj = json!({
            "added_tokens": [
                {"id": 128000, "content": "<|begin_of_text|>"},
                {"id": 128001, "content": "<|end_of_text|>"},
                {"id": 128004, "content": "<|finetune_right_pad_id|>"}],
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel"},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "A"}}],
                 "pair": [{"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "A"}},
                          {"SpecialToken": {"id": "<|begin_of_text|>"}}, {"Sequence": {"id": "B"}}]}]}
        });
        let cfg = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                         "pad_token": "<|finetune_right_pad_id|>"});
        let sv = special(tj, Some(cfg));
        assert_eq!(
            sv.ids.items,
            [
                ("bos".into(), 128000),
                ("eos".into(), 128001),
                ("pad".into(), 128004)
            ]
        );
        assert_eq!(
            sv.add.items,
            [
                ("bos".into(), true),
                ("eos".into(), false),
                ("sep".into(), false)
            ]
        );
    }

    #[test]
    fn trailing_template_token_other_than_eos_moves_eos_to_eot() {
        let tj = json!({
            "added_tokens": [{"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"},
                             {"id": 3, "content": "<end>"}],
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                           {"SpecialToken": {"id": "<end>"}}]}
        });
        let sv = special(tj, Some(json!({"bos_token": "<s>", "eos_token": "</s>"})));
        assert_eq!(
            sv.ids.items,
            [("bos".into(), 1), ("eos".into(), 3), ("eot".into(), 2)]
        );
        assert_eq!(sv.add.items, [("bos".into(), true), ("eos".into(), true)]);
    }

    #[test]
    fn empty_tokenizer_config_reads_nothing_from_it() {
        let tj = json!({"added_tokens": [{"id": 0, "content": "<s>"}]});
        let sv = special(tj, Some(json!({})));
        assert!(sv.ids.items.is_empty() && sv.add.items.is_empty());
        assert!(sv.chat_template.is_none());
    }

    #[test]
    fn negative_special_id_is_an_error() {
        let r = SpecialVocab::load(
            Path::new("/nonexistent"),
            &json!({"added_tokens": []}),
            Some(&json!({"add_bos_token": true})),
            &json!({"bos_token_id": -1}),
        );
        assert!(matches!(
            r,
            Err(ConvertError::BadSpecialToken { id: -1, .. })
        ));
    }

    #[test]
    fn pair_merges_encode_spaces() {
        let m = merges(
            &json!({"model": {"merges": [["a b", "c"], ["Ġ", "t"]]}}),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(m, ["a\u{120}b c", "Ġ t"]);
        assert!(merges(&json!({"model": {"merges": [1]}}), Path::new("t")).is_err());
    }

    #[test]
    fn special_looking_tokens() {
        assert!(
            looks_special("<|eot_id|>") && looks_special("<unused12>") && looks_special("<pad>")
        );
        assert!(!looks_special("<s>") && !looks_special("|>"));
    }
}
