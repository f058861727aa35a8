//! Chat templates: turning a conversation into the prompt text a model was
//! trained on.
//!
//! A model's own `tokenizer.chat_template` (Jinja) is rendered the way
//! Hugging Face's `apply_chat_template` renders it, byte for byte: jinja2
//! with `trim_blocks` and `lstrip_blocks`, Python's printing of values,
//! `tojson` as `json.dumps(ensure_ascii=False)`, `raise_exception` and
//! `strftime_now`. Files without a template get the built-in Llama 3.x
//! format.
//!
//! ```
//! use edgellama_tokenizer::chat::{ChatMessage, ChatTemplate, RenderRequest};
//! # fn main() -> Result<(), edgellama_tokenizer::chat::ChatTemplateError> {
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}",
//! )?;
//! let req = RenderRequest::new(vec![ChatMessage::user("Hi")]);
//! assert_eq!(t.render(&req)?, "<|user|>Hi\n");
//! # Ok(()) }
//! ```
//!
//! Templates are untrusted input: rendering runs on a fuel budget and a
//! recursion limit, so a template cannot loop forever or exhaust memory, and
//! every failure is a [`ChatTemplateError`].

pub mod guard;
mod jinja;
mod llama3;
mod message;
mod pyfmt;
mod strftime;
pub mod tools;

use std::error::Error as _;

use edgellama_gguf::GgufFile;
use minijinja::value::Value as JValue;
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};

pub use message::{ChatMessage, ContentPart, FunctionCall, MessageContent, MessageToolCall};
pub use strftime::{Clock, DateTime};

/// The GGUF key holding the Jinja chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Fuel for one render before counting the input: enough for templates
/// with large tool lists; each input byte adds [`FUEL_PER_INPUT_BYTE`].
const BASE_FUEL: u64 = 2_000_000;
const FUEL_PER_INPUT_BYTE: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not parse.
    #[error("invalid chat template: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: it rejects the
    /// conversation (for instance several tool calls in one message).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// Rendering failed (undefined value, bad operation, type error).
    #[error("chat template failed: {0}")]
    Render(String),
    /// The template ran out of its fuel or recursion budget.
    #[error("chat template exceeded its resource limits: {0}")]
    Limits(String),
    /// The request cannot be given to a template.
    #[error("invalid chat request: {0}")]
    Input(String),
    /// The file's metadata is unusable.
    #[error("invalid chat template metadata: {0}")]
    Metadata(String),
}

fn classify(e: minijinja::Error) -> ChatTemplateError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<jinja::Raised>() {
            return ChatTemplateError::Raised(r.0.clone());
        }
        source = s.source();
    }
    let text = e.to_string();
    match e.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape | ErrorKind::InvalidDelimiter => {
            ChatTemplateError::Syntax(text)
        }
        ErrorKind::OutOfFuel => ChatTemplateError::Limits(text),
        _ if e.to_string().contains("recursion") => ChatTemplateError::Limits(text),
        _ => ChatTemplateError::Render(text),
    }
}

/// What to render: the conversation and the template's other inputs.
#[derive(Debug, Clone, Default)]
pub struct RenderRequest {
    pub messages: Vec<ChatMessage>,
    /// Tool definitions (JSON schemas, usually
    /// `{"type": "function", "function": {...}}`). `None` reaches the
    /// template as `tools = none`, as with Hugging Face.
    pub tools: Option<Vec<Value>>,
    /// End with the header of an assistant turn, so the model replies.
    pub add_generation_prompt: bool,
    /// Any further template variables (`date_string`,
    /// `tools_in_user_message`, `custom_tools`, `builtin_tools`, ...); they
    /// take precedence over `bos_token` and `eos_token`.
    pub kwargs: Map<String, Value>,
    /// The time `strftime_now` reports.
    pub clock: Clock,
}

impl RenderRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        RenderRequest {
            messages,
            ..Default::default()
        }
    }

    pub fn with_tools(mut self, tools: Vec<Value>) -> Self {
        self.tools = Some(tools);
        self
    }

    pub fn with_generation_prompt(mut self, yes: bool) -> Self {
        self.add_generation_prompt = yes;
        self
    }

    pub fn with_kwarg(mut self, key: impl Into<String>, value: Value) -> Self {
        self.kwargs.insert(key.into(), value);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

enum Source {
    Jinja {
        source: String,
        env: Box<Environment<'static>>,
    },
    BuiltinLlama3,
}

/// A chat template: the model's Jinja template, or the built-in Llama 3.x
/// format. Cheap to render many times; `Send + Sync`.
pub struct ChatTemplate {
    source: Source,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles a Jinja template; `bos_token` and `eos_token` are empty
    /// until set with [`ChatTemplate::with_special_tokens`].
    pub fn new(source: impl Into<String>) -> Result<Self, ChatTemplateError> {
        let source = source.into();
        // Fuel is set per render, from the size of the input.
        let env = jinja::environment(source.clone(), None).map_err(classify)?;
        Ok(ChatTemplate {
            source: Source::Jinja {
                source,
                env: Box::new(env),
            },
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    /// The built-in Llama 3.x format, with Llama 3's BOS text.
    pub fn builtin_llama3() -> Self {
        ChatTemplate {
            source: Source::BuiltinLlama3,
            bos_token: "<|begin_of_text|>".into(),
            eos_token: "<|eot_id|>".into(),
        }
    }

    pub fn with_special_tokens(mut self, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    /// The file's `tokenizer.chat_template`, or the built-in Llama 3.x
    /// format when it has none; `bos_token`/`eos_token` are the texts of the
    /// vocabulary's BOS and EOS tokens.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ChatTemplateError> {
        let template = match file.get(CHAT_TEMPLATE_KEY) {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| {
                ChatTemplateError::Metadata(format!("{CHAT_TEMPLATE_KEY} is not a string"))
            })?),
        };
        let (bos, eos) = special_token_texts(file);
        let t = match template {
            Some(src) => ChatTemplate::new(src)?,
            None => ChatTemplate::builtin_llama3(),
        };
        Ok(match (bos, eos) {
            (None, None) => t,
            (bos, eos) => {
                let bos = bos.unwrap_or_else(|| t.bos_token.clone());
                let eos = eos.unwrap_or_else(|| t.eos_token.clone());
                t.with_special_tokens(bos, eos)
            }
        })
    }

    /// [`ChatTemplate::from_gguf`] with the template text replaced (as
    /// llama.cpp's `--chat-template-file` does), keeping the file's
    /// special tokens.
    pub fn from_gguf_with_source(file: &GgufFile, source: &str) -> Result<Self, ChatTemplateError> {
        let (bos, eos) = special_token_texts(file);
        Ok(ChatTemplate::new(source)?
            .with_special_tokens(bos.unwrap_or_default(), eos.unwrap_or_default()))
    }

    /// The Jinja source, or `None` for the built-in format.
    pub fn source(&self) -> Option<&str> {
        match &self.source {
            Source::Jinja { source, .. } => Some(source),
            Source::BuiltinLlama3 => None,
        }
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self.source, Source::BuiltinLlama3)
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Tokens of a prompt this template rendered. Templates write the BOS
    /// text themselves; when the tokenizer adds BOS too, the text's copy is
    /// dropped, as llama.cpp does, so the prompt starts with exactly one.
    pub fn encode(&self, tok: &crate::Tokenizer, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        let mut text = text;
        if let (Some(bos), true) = (tok.bos_id(), tok.adds_bos()) {
            if !self.bos_token.is_empty() {
                text = text.strip_prefix(self.bos_token.as_str()).unwrap_or(text);
            }
            ids.push(bos);
        }
        ids.extend(tok.encode(text, false, true));
        ids
    }

    /// Renders the prompt.
    pub fn render(&self, req: &RenderRequest) -> Result<String, ChatTemplateError> {
        let env = match &self.source {
            Source::BuiltinLlama3 => return llama3::render(req, &self.bos_token),
            Source::Jinja { env, .. } => env,
        };
        let messages = serde_json::to_value(&req.messages)
            .map_err(|e| ChatTemplateError::Input(format!("messages: {e}")))?;
        let input_bytes = messages.to_string().len()
            + req
                .tools
                .as_ref()
                .map_or(0, |t| Value::from(t.clone()).to_string().len())
            + Value::Object(req.kwargs.clone()).to_string().len();
        // Variables in the order and with the defaults of transformers'
        // `render_jinja_template`: kwargs last, overriding special tokens.
        let mut ctx: Vec<(String, JValue)> = vec![
            ("messages".into(), pyfmt::to_value(&messages)),
            (
                "tools".into(),
                match &req.tools {
                    Some(t) => pyfmt::to_value(t),
                    None => JValue::from(()),
                },
            ),
            ("documents".into(), JValue::from(())),
            (
                "add_generation_prompt".into(),
                JValue::from(req.add_generation_prompt),
            ),
            ("bos_token".into(), JValue::from(self.bos_token.as_str())),
            ("eos_token".into(), JValue::from(self.eos_token.as_str())),
            ("strftime_now".into(), jinja::strftime_function(req.clock)),
        ];
        for (k, v) in &req.kwargs {
            ctx.retain(|(name, _)| name != k);
            ctx.push((k.clone(), pyfmt::to_value(v)));
        }
        let ctx = JValue::from_pairs(ctx);
        // A clone shares the compiled template; only the fuel differs.
        let mut env = env.clone();
        env.set_fuel(Some(BASE_FUEL + FUEL_PER_INPUT_BYTE * input_bytes as u64));
        let tmpl = env.get_template(jinja::TEMPLATE_NAME).map_err(classify)?;
        tmpl.render(ctx).map_err(classify)
    }
}

/// Texts of the BOS and EOS tokens named by `tokenizer.ggml.*_token_id`.
fn special_token_texts(file: &GgufFile) -> (Option<String>, Option<String>) {
    let tokens = file
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .and_then(|a| a.strings());
    let text = |key: &str| {
        let id = file.get(key)?.as_u32()? as usize;
        tokens?.get(id).cloned()
    };
    (
        text("tokenizer.ggml.bos_token_id"),
        text("tokenizer.ggml.eos_token_id"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChatTemplate>();
    }
}
