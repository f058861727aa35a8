//! Which GGUF file `-hf ORG/NAME[:QUANT]` means, by llama.cpp's rules
//! (common/download.cpp: `get_gguf_split_info`, `gguf_filename_is_model`,
//! `find_best_model`, `get_split_files`), so that the same argument picks the
//! same file in both programs.

/// What a GGUF file name says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitInfo {
    /// The name without `.gguf` and without `-NNNNN-of-NNNNN`.
    pub prefix: String,
    /// The quant tag, upper-cased: the last `-` or `.` separated part of the
    /// prefix when it is all letters, digits and `_` (`Q4_K_M`, `F16`).
    pub tag: String,
    /// 1-based part number, 1 for a file that is not split.
    pub index: u32,
    pub count: u32,
}

/// `None` for names that do not end in `.gguf`.
pub fn split_info(path: &str) -> Option<SplitInfo> {
    let mut prefix = path.strip_suffix(".gguf")?;
    let (mut index, mut count) = (1, 1);
    // `^(.+)-([0-9]{5})-of-([0-9]{5})$`, case-insensitive.
    const SUFFIX: usize = "-00001-of-00003".len();
    if prefix.len() > SUFFIX && prefix.is_char_boundary(prefix.len() - SUFFIX) {
        let (head, tail) = prefix.split_at(prefix.len() - SUFFIX);
        let t = tail.as_bytes();
        let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
        if t[0] == b'-' && digits(1..6) && t[6..10].eq_ignore_ascii_case(b"-of-") && digits(10..15)
        {
            index = tail[1..6].parse().unwrap_or(1);
            count = tail[10..15].parse().unwrap_or(1);
            prefix = head;
        }
    }
    // `[-.]([A-Z0-9_]+)$`, case-insensitive: the leftmost match can only
    // start at the last separator.
    let tag = match prefix.rfind(['-', '.']) {
        Some(at) => {
            let t = &prefix[at + 1..];
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                t.to_ascii_uppercase()
            } else {
                String::new()
            }
        }
        None => String::new(),
    };
    Some(SplitInfo {
        prefix: prefix.to_string(),
        tag,
        index,
        count,
    })
}

/// A GGUF that holds a model, not a projector, an importance matrix or a
/// draft head.
pub fn is_model_gguf(path: &str) -> bool {
    if !path.ends_with(".gguf") {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    !["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"]
        .iter()
        .any(|k| name.contains(k))
}

fn is_first_part(path: &str) -> bool {
    split_info(path).is_some_and(|s| s.count <= 1 || s.index == 1)
}

/// llama.cpp's regex `TAG[.-]` searched anywhere in the path, ignoring case.
fn mentions_tag(path: &str, tag: &str) -> bool {
    let (p, t) = (path.as_bytes(), tag.as_bytes());
    if t.is_empty() || p.len() <= t.len() {
        return false;
    }
    (0..p.len() - t.len())
        .any(|i| p[i..i + t.len()].eq_ignore_ascii_case(t) && matches!(p[i + t.len()], b'.' | b'-'))
}

/// The file `-hf` picks among a repository's files (in the hub's order):
/// the first model GGUF mentioning the quant tag; without a tag, Q4_K_M,
/// then Q8_0, then the first model GGUF. Split models are found by their
/// first part.
pub fn best_model<'a>(files: &'a [String], quant: Option<&str>) -> Option<&'a str> {
    let tags: Vec<&str> = match quant {
        Some(q) => vec![q],
        None => vec!["Q4_K_M", "Q8_0"],
    };
    for t in tags {
        if let Some(f) = files
            .iter()
            .find(|f| is_model_gguf(f) && mentions_tag(f, t) && is_first_part(f))
        {
            return Some(f.as_str());
        }
    }
    if quant.is_none() {
        return files
            .iter()
            .find(|f| is_model_gguf(f) && is_first_part(f))
            .map(String::as_str);
    }
    None
}

/// Every part of the model whose first part is `primary`, in part order
/// (just `primary` when it is not split).
pub fn split_parts(files: &[String], primary: &str) -> Vec<String> {
    let Some(info) = split_info(primary).filter(|s| s.count > 1) else {
        return vec![primary.to_string()];
    };
    let mut parts: Vec<(u32, String)> = files
        .iter()
        .filter_map(|f| {
            let s = split_info(f)?;
            (s.count == info.count && s.prefix == info.prefix).then(|| (s.index, f.clone()))
        })
        .collect();
    parts.sort();
    parts.dedup_by_key(|p| p.0);
    parts.into_iter().map(|(_, f)| f).collect()
}

/// The names of every part of a split model, derived from one part's name
/// as llama.cpp's `common_download_get_all_parts` does.
pub fn all_part_names(path: &str) -> Vec<String> {
    let Some(info) = split_info(path).filter(|s| s.count > 1) else {
        return vec![path.to_string()];
    };
    (1..=info.count)
        .map(|i| format!("{}-{i:05}-of-{:05}.gguf", info.prefix, info.count))
        .collect()
}

/// The quant tags of the model GGUFs among `files`, in order, once each.
pub fn available_quants(files: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for f in files {
        if !is_model_gguf(f) || !is_first_part(f) {
            continue;
        }
        if let Some(s) = split_info(f) {
            if !s.tag.is_empty() && !tags.contains(&s.tag) {
                tags.push(s.tag);
            }
        }
    }
    tags
}
