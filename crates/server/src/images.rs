//! Image parts of chat messages (`{"type": "image_url", "image_url": {"url":
//! ...}}`) for vision models: decoded and prepared before the request is
//! queued, so a bad image is a 400 and never reaches the engine. Each part
//! becomes an `{"type": "image"}` part, which the vision model's chat
//! template renders as its image token (and which tells the template the
//! conversation has images, as transformers' processor passes it).

use crate::error::ApiError;
use base64::Engine as _;
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_models::{PreparedImage, PreprocessConfig};
use edgellama_tokenizer::chat::{ChatMessage, ContentPart, MessageContent};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// What the served model needs to take images, and where the operator
/// lets them come from.
#[derive(Debug, Clone)]
pub struct ImageSupport {
    /// The image token and its text, as the chat template would write it.
    pub token: u32,
    pub token_text: String,
    pub preprocess: PreprocessConfig,
    pub limits: ImageLimits,
    /// Local files under this directory may be named by path or `file://`.
    pub allow_dir: Option<PathBuf>,
    /// `http(s)` URLs are fetched (the operator's choice: the server then
    /// makes requests wherever its clients point it).
    pub allow_urls: bool,
}

/// Replaces every image part of `messages` by a bare `image` part and
/// returns the prepared images in prompt order.
pub fn take_images(
    messages: &mut [ChatMessage],
    support: Option<&ImageSupport>,
) -> Result<Vec<Arc<PreparedImage>>, ApiError> {
    let mut out = Vec::new();
    for (i, m) in messages.iter_mut().enumerate() {
        let Some(MessageContent::Parts(parts)) = &mut m.content else {
            continue;
        };
        for (j, p) in parts.iter_mut().enumerate() {
            if p.kind != "image_url" && p.kind != "image" {
                continue;
            }
            let param = format!("messages[{i}].content[{j}]");
            let Some(sup) = support else {
                return Err(ApiError::bad_param(
                    &param,
                    "this model takes no images (it is not a vision model)",
                ));
            };
            let url = p
                .extra
                .get("image_url")
                .and_then(|v| match v {
                    Value::String(s) => Some(s.as_str()),
                    v => v.get("url").and_then(Value::as_str),
                })
                .ok_or_else(|| ApiError::bad_param(&param, "an image part needs image_url.url"))?;
            let bytes = fetch(url, sup).map_err(|e| ApiError::bad_param(&param, e))?;
            let img = preprocess::prepare(&bytes, &sup.limits, &sup.preprocess).map_err(|e| {
                ApiError::bad_param(&param, format!("the image cannot be used: {e}"))
            })?;
            out.push(Arc::new(img));
            *p = ContentPart {
                kind: "image".into(),
                text: None,
                extra: Default::default(),
            };
        }
    }
    Ok(out)
}

/// The bytes an image URL names: `data:` URLs always; local files only
/// under the directory the operator allowed; `http(s)` URLs only when the
/// operator allowed them.
fn fetch(url: &str, sup: &ImageSupport) -> Result<Vec<u8>, String> {
    let max = sup.limits.max_bytes;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("a data: URL needs a ',' before its data")?;
        if !meta.ends_with(";base64") {
            return Err("only base64 data: URLs are accepted".into());
        }
        // Base64 is 4/3 of the bytes: refuse before decoding.
        if data.len() / 4 * 3 > max {
            return Err(format!("the image is larger than {max} bytes"));
        }
        let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("the data: URL is not valid base64: {e}"));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if !sup.allow_urls {
            return Err(
                "remote image URLs are not fetched by this server (it was not \
                        started with --allow-image-urls); send the image as a base64 \
                        data: URL"
                    .into(),
            );
        }
        return download(url, max);
    }
    let Some(dir) = &sup.allow_dir else {
        return Err(
            "local image paths are refused (the server was not started with \
                    --allow-image-path)"
                .into(),
        );
    };
    let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let base = dir
        .canonicalize()
        .map_err(|e| format!("the allowed image directory cannot be read: {e}"))?;
    if !real.starts_with(&base) {
        return Err(format!(
            "{} is outside the allowed image directory",
            path.display()
        ));
    }
    let len = std::fs::metadata(&real)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?
        .len();
    if len > max as u64 {
        return Err(format!("the image is larger than {max} bytes"));
    }
    std::fs::read(&real).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// How long one image download may take, connection included.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// GETs `url`, refusing a body of more than `max` bytes without reading
/// past it.
fn download(url: &str, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let agent = ureq::AgentBuilder::new().timeout(DOWNLOAD_TIMEOUT).build();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot fetch the image: {e}"))?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot fetch the image: {e}"))?;
    if bytes.len() > max {
        return Err(format!("the image is larger than {max} bytes"));
    }
    Ok(bytes)
}
