//! `general.name`, `general.basename`, `general.size_label` and friends, from
//! the model's id and parameter count, with the heuristics of gguf-py's
//! `Metadata` (`get_model_id_components`, `id_to_title`, `size_label`).
//!
//! The regular expressions there are matched by hand below, ASCII digits
//! standing for Python's `\d`. The model card (README.md front matter) is not
//! read, so license, tags, languages and base models are not written.

/// What the heuristics found; `None` fields are not written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelNaming {
    pub name: Option<String>,
    pub organization: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

/// The pieces of a Hugging Face style id (`org/Name-Version-Size-Finetune`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdComponents {
    pub full_name: Option<String>,
    pub org: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

impl ModelNaming {
    /// `name_or_path` is the directory as given (what `transformers` records
    /// as `_name_or_path`; used only when it has at most one `/`), `dir_name`
    /// the directory's own name; `total_params` counts every written tensor.
    pub fn infer(name_or_path: &str, dir_name: &str, total_params: u64) -> ModelNaming {
        let mut m = ModelNaming::default();
        let total = i128::from(total_params);
        if name_or_path.matches('/').count() <= 1 {
            m.fill(&model_id_components(name_or_path, total));
        }
        m.fill(&model_id_components(dir_name, total));
        if m.name.is_none() {
            m.name = Some(dir_name.to_owned());
        }
        if m.size_label.is_none() && total_params > 0 {
            m.size_label = Some(size_label(total_params));
        }
        m
    }

    fn fill(&mut self, c: &IdComponents) {
        fn set(slot: &mut Option<String>, v: Option<String>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        set(&mut self.name, c.full_name.as_deref().map(id_to_title));
        set(&mut self.organization, c.org.as_deref().map(id_to_title));
        set(&mut self.basename, c.basename.clone());
        set(&mut self.finetune, c.finetune.clone());
        set(&mut self.version, c.version.clone());
        set(&mut self.size_label, c.size_label.clone());
    }
}

/// gguf-py's `model_weight_count_rounded_notation(n, min_digits=2)`.
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let rounded = format!("{}", scaled.round_ties_even() as i64);
    let fix = 2usize.saturating_sub(rounded.trim_start_matches('0').len());
    format!("{scaled:.fix$}{suffix}")
}

/// Python's `str.title()`: a cased letter is upper-cased after a non-cased
/// character, lower-cased after a cased one.
fn py_title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_lowercase() || c.is_uppercase();
    }
    out
}

/// Python's `str.islower()`.
fn py_islower(w: &str) -> bool {
    w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `\d+([.]\d+)*`
fn is_dotted_number(s: &str) -> bool {
    s.split('.').all(is_digits)
}

/// gguf-py's `Metadata.id_to_title`.
pub fn id_to_title(s: &str) -> String {
    let s = s.trim().replace('-', " ");
    s.split_whitespace()
        .map(|w| {
            // re.match(r'^(v\d+(?:\.\d+)*|\d.*)$', w), case-sensitive.
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || w.strip_prefix('v').is_some_and(is_dotted_number);
            if py_islower(w) && !versionish {
                py_title(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    let head = s.get(..p.len())?;
    head.eq_ignore_ascii_case(p).then(|| &s[p.len()..])
}

/// `(v|iter)?\d+([.]\d+)*`, ignoring case.
fn is_version(s: &str) -> bool {
    is_dotted_number(s)
        || strip_prefix_ci(s, "v").is_some_and(is_dotted_number)
        || strip_prefix_ci(s, "iter").is_some_and(is_dotted_number)
}

/// `i?q\d(_\w)*|b?fp?(16|32)`, ignoring case.
fn is_quant_type(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    let q = l.strip_prefix('i').unwrap_or(&l);
    if let Some(rest) = q.strip_prefix('q') {
        let mut it = rest.chars();
        if it.next().is_some_and(|c| c.is_ascii_digit()) {
            let tail: Vec<char> = it.collect();
            if tail.len().is_multiple_of(2)
                && tail
                    .chunks(2)
                    .all(|p| p[0] == '_' && (p[1].is_alphanumeric() || p[1] == '_'))
            {
                return true;
            }
        }
    }
    let f = l.strip_prefix('b').unwrap_or(&l);
    let Some(f) = f.strip_prefix('f') else {
        return false;
    };
    let f = f.strip_prefix('p').unwrap_or(f);
    f == "16" || f == "32"
}

/// `(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)`, ignoring case.
fn is_size(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if ["small", "mini", "medium", "large", "xl", "xxl"].contains(&l.as_str()) {
        return true;
    }
    // \d+([._]\d+)?[kmbt]\d?
    let core = |c: &str| -> bool {
        let b = c.as_bytes();
        let mut i = 0;
        let digits = |i: &mut usize| {
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            *i > start
        };
        if !digits(&mut i) {
            return false;
        }
        if i < b.len() && (b[i] == b'.' || b[i] == b'_') {
            i += 1;
            if !digits(&mut i) {
                return false;
            }
        }
        if i >= b.len() || !b"kmbt".contains(&b[i]) {
            return false;
        }
        i += 1;
        if i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i == b.len()
    };
    if core(&l) {
        return true;
    }
    if let Some(rest) = l.strip_prefix('a') {
        if core(rest) {
            return true;
        }
    }
    // \d+x then the core: the prefix's digit run ends at the first 'x'.
    if let Some(x) = l.find('x') {
        if is_digits(&l[..x]) && core(&l[x + 1..]) {
            return true;
        }
    }
    false
}

#[derive(Default, Clone)]
struct Tags {
    basename: bool,
    size_label: bool,
    finetune: bool,
    version: bool,
    kind: bool,
}

impl Tags {
    fn count(&self) -> usize {
        [
            self.basename,
            self.size_label,
            self.finetune,
            self.version,
            self.kind,
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    }
}

/// gguf-py's `Metadata.get_model_id_components`.
pub fn model_id_components(model_id: &str, total_params: i128) -> IdComponents {
    if model_id.contains(' ') {
        return IdComponents {
            full_name: Some(model_id.to_owned()),
            ..IdComponents::default()
        };
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, f)) => (Some(o.to_owned()), f.to_owned()),
        None => (None, model_id.to_owned()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let mut tags = vec![Tags::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if is_version(&part) {
            tags[i].version = true;
        } else if is_quant_type(&part) {
            tags[i].kind = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && is_size(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            // bloom-7b1 -> 7.1b
            if n >= 2 && p[n - 1].is_ascii_digit() {
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            let mut part: String = p.iter().collect();
            if total_params != 0 {
                if let Some(last) = part.chars().last() {
                    let head = &part[..part.len() - last.len_utf8()];
                    if let Ok(v) = head.parse::<f64>() {
                        let exp = " KMBT".find(last).map_or(-1, |e| e as i32);
                        let label = v * 1000f64.powi(exp);
                        let total = total_params as f64;
                        let context_like = if total_params < 0 {
                            label < ((-total_params) / 8) as f64
                        } else {
                            (label - total).abs() > (7 * total_params / 8) as f64
                        };
                        if context_like {
                            tags[i].finetune = true;
                            part = format!("{head}{}", last.to_lowercase());
                        }
                    }
                }
            }
            if tags[i].count() == 0 {
                tags[i].size_label = true;
            }
            parts[i] = part;
        } else if i > 0
            && ["chat", "instruct", "vision", "lora"]
                .iter()
                .any(|w| part.eq_ignore_ascii_case(w))
        {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                tags[i].kind = true;
            } else {
                tags[i].finetune = true;
            }
        }
    }
    // Word-based size labels give way to a numeric one.
    let numeric_size = parts
        .iter()
        .zip(&tags)
        .any(|(p, t)| t.size_label && p.chars().any(|c| c.is_ascii_digit()));
    if numeric_size {
        for (p, t) in parts.iter().zip(tags.iter_mut()) {
            if t.size_label && p.chars().all(char::is_alphabetic) {
                t.size_label = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(tags.iter_mut()) {
        let alpha_start = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.count() == 0 && alpha_start) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.count() == 0 {
                t.finetune = true;
            }
        }
    }
    for t in tags.iter_mut().rev() {
        if t.basename && t.count() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Tags) -> bool| -> Option<String> {
        let s = parts
            .iter()
            .zip(&tags)
            .filter(|(_, t)| f(t))
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join("-");
        (!s.is_empty()).then_some(s)
    };
    let mut basename = join(&|t| t.basename);
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&tags) {
            if t.size_label && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdComponents {
        full_name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(id: &str, total: i128) -> [Option<String>; 5] {
        let c = model_id_components(id, total);
        [c.org, c.basename, c.finetune, c.version, c.size_label]
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    // Expected values printed by gguf-py's Metadata.get_model_id_components
    // (the gguf-py of llama.cpp's tree in llama-cpp-python 0.3.36).
    #[test]
    fn id_components_match_gguf_py() {
        assert_eq!(
            parts("Mixtral-8x7B-Instruct-v0.1", 0),
            [None, s("Mixtral"), s("Instruct"), s("v0.1"), s("8x7B")]
        );
        assert_eq!(
            parts("hf-internal-testing/tiny-random-LlamaForCausalLM", 0),
            [s("hf-internal-testing"), None, None, None, None]
        );
        assert_eq!(
            parts("NousResearch/Meta-Llama-3-8B", 0),
            [s("NousResearch"), s("Meta-Llama-3"), None, None, s("8B")]
        );
        assert_eq!(
            parts("meta-llama/Llama-3.2-1B-Instruct", 0),
            [
                s("meta-llama"),
                s("Llama-3.2"),
                s("Instruct"),
                None,
                s("1B")
            ]
        );
        assert_eq!(
            parts("bigscience/bloom-7b1-petals", 0),
            [s("bigscience"), s("bloom"), s("petals"), None, s("7.1B")]
        );
        assert_eq!(
            parts("Qwen1.5-MoE-A2.7B-Chat", 0),
            [None, s("Qwen1.5-MoE"), s("Chat"), None, s("A2.7B")]
        );
        assert_eq!(
            parts("smallcloudai/Refact-1_6B-fim", 0),
            [s("smallcloudai"), s("Refact"), s("fim"), None, s("1.6B")]
        );
        // A size far from the parameter count is a context length.
        assert_eq!(
            parts("Phi-3-mini-128k-instruct", 4_000_000_000),
            [None, s("Phi-3"), s("128k-instruct"), None, s("mini")]
        );
        assert_eq!(
            parts("tiny-llama32-tied-bf16", 8_300_000),
            [None, None, None, None, None]
        );
        assert_eq!(
            parts("./Llama-3.2-1B", 0),
            [None, s("Llama-3.2"), None, None, s("1B")]
        );
        assert_eq!(parts("iq2_xxs-llama", 0), [None, None, None, None, None]);
        assert_eq!(
            parts("Llama-3-q4_k_m-GGUF", 0),
            [None, s("Llama-3"), s("GGUF"), None, None]
        );
        assert_eq!(
            parts("model-a3b-8x7b", 1_000_000_000),
            [None, s("model"), None, None, s("a3B-8x7B")]
        );
        assert_eq!(
            parts("x-XL-7b1", 0),
            [None, s("x-XL"), None, None, s("7.1B")]
        );
    }

    #[test]
    fn titles_and_size_labels() {
        assert_eq!(
            id_to_title("tiny-llama32-tied-bf16"),
            "Tiny Llama32 Tied Bf16"
        );
        assert_eq!(
            id_to_title("Llama-3.2-1B-Instruct"),
            "Llama 3.2 1B Instruct"
        );
        assert_eq!(id_to_title("meta-llama"), "Meta Llama");
        assert_eq!(id_to_title("v0.1-llama3b"), "v0.1 Llama3B");
        assert_eq!(size_label(8_312_520), "8.3M");
        assert_eq!(size_label(16_520_264), "17M");
        assert_eq!(size_label(1_235_814_400), "1.2B");
        assert_eq!(size_label(999), "1.0K");
        assert_eq!(size_label(0), "0.00K");
    }

    #[test]
    fn naming_prefers_the_given_id_then_the_directory() {
        let n = ModelNaming::infer(
            "/models/x/tiny-llama32-tied-bf16",
            "tiny-llama32-tied-bf16",
            8_312_520,
        );
        assert_eq!(n.name.as_deref(), Some("Tiny Llama32 Tied Bf16"));
        assert_eq!(n.size_label.as_deref(), Some("8.3M"));
        assert_eq!(n.basename, None);
        let n = ModelNaming::infer(
            "meta-llama/Llama-3.2-1B-Instruct",
            "Llama-3.2-1B-Instruct",
            1_235_814_400,
        );
        assert_eq!(n.name.as_deref(), Some("Llama 3.2 1B Instruct"));
        assert_eq!(n.organization.as_deref(), Some("Meta Llama"));
        assert_eq!(n.basename.as_deref(), Some("Llama-3.2"));
        assert_eq!(n.finetune.as_deref(), Some("Instruct"));
        assert_eq!(n.size_label.as_deref(), Some("1B"));
    }
}
