//! `edgellama template`: print the prompt a conversation becomes.

use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_tokenizer::chat::{ChatMessage, ChatTemplate, RenderRequest};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// Model or vocabulary-only file (GGUF); its `tokenizer.chat_template`
    /// is used, or the built-in Llama 3.x format when it has none.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Use this Jinja template instead of the file's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// The conversation: a JSON list of messages, or an object with a
    /// `messages` list (and optionally `tools`), as in a chat request.
    #[arg(long = "messages")]
    pub messages: PathBuf,
    /// Tool definitions: a JSON list of function schemas.
    #[arg(long = "tools")]
    pub tools: Option<PathBuf>,
    /// Do not end with the header of an assistant turn.
    #[arg(long = "no-generation-prompt")]
    pub no_generation_prompt: bool,
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The validated inputs, before any model file is opened.
struct Conversation {
    messages: Vec<ChatMessage>,
    tools: Option<Vec<Value>>,
}

fn parse_inputs(a: &TemplateArgs) -> Result<Conversation> {
    let doc = read_json(&a.messages, "messages")?;
    let (messages, mut tools) = match doc {
        Value::Array(_) => (doc, None),
        Value::Object(mut obj) => {
            let Some(m) = obj.remove("messages") else {
                bail!(
                    "{}: expected a list of messages or an object with \"messages\"",
                    a.messages.display()
                );
            };
            (m, obj.remove("tools").filter(|t| !t.is_null()))
        }
        _ => bail!(
            "{}: expected a list of messages or an object with \"messages\"",
            a.messages.display()
        ),
    };
    let messages: Vec<ChatMessage> = serde_json::from_value(messages)
        .with_context(|| format!("{}: invalid message list", a.messages.display()))?;
    if let Some(path) = &a.tools {
        tools = Some(read_json(path, "tools")?);
    }
    let tools = match tools {
        None => None,
        Some(Value::Array(t)) => Some(t),
        Some(_) => bail!("tools must be a JSON list of function definitions"),
    };
    Ok(Conversation { messages, tools })
}

pub fn run(a: TemplateArgs) -> Result<()> {
    let prompt = render_prompt(&a)?;
    let mut out = std::io::stdout().lock();
    out.write_all(prompt.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the prompt")?;
    Ok(())
}

fn render_prompt(a: &TemplateArgs) -> Result<String> {
    let conv = parse_inputs(a)?;
    let source = match &a.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the chat template {}", p.display()))?,
        ),
        None => None,
    };
    let file = crate::load::open_gguf(&a.model, edgellama_gguf::LoadMode::Map)?;
    let template = match &source {
        Some(src) => ChatTemplate::from_gguf_with_source(&file, src),
        None => ChatTemplate::from_gguf(&file),
    }
    .with_context(|| format!("cannot load the chat template of {}", a.model.display()))?;
    let mut req = RenderRequest::new(conv.messages).with_generation_prompt(!a.no_generation_prompt);
    req.tools = conv.tools;
    template
        .render(&req)
        .context("cannot render the conversation with the chat template")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        let dir = std::env::var_os("EDGELLAMA_TESTDATA").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"),
            PathBuf::from,
        );
        let p = dir.join(name);
        assert!(
            p.is_file(),
            "{} is missing: run scripts/fetch-testdata.sh",
            p.display()
        );
        p
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn args(model: PathBuf, messages: PathBuf) -> TemplateArgs {
        TemplateArgs {
            model,
            chat_template_file: None,
            messages,
            tools: None,
            no_generation_prompt: false,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("edgellama-template-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// SmolLM2's own template, as Hugging Face renders it (see the
    /// tokenizer's chat goldens).
    #[test]
    fn renders_the_file_template_exactly() {
        let d = scratch("smol");
        let m = write(
            &d,
            "m.json",
            r#"{"messages": [{"role": "user", "content": "Hi"}]}"#,
        );
        let a = args(testdata("SmolLM2-135M-Instruct.Q4_1.gguf"), m);
        assert_eq!(
            render_prompt(&a).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn template_file_and_tools_override() {
        let d = scratch("override");
        let m = write(&d, "m.json", r#"[{"role": "user", "content": "Hi"}]"#);
        let t = write(&d, "t.json", r#"[{"name": "f"}, {"name": "g"}]"#);
        let j = write(
            &d,
            "t.jinja",
            "{{ bos_token }}{% for t in tools %}{{ t.name }};{% endfor %}{{ messages[0].content }}{% if add_generation_prompt %}>{% endif %}\n",
        );
        let mut a = args(testdata("ggml-vocab-llama-bpe.gguf"), m);
        a.chat_template_file = Some(j);
        a.tools = Some(t);
        a.no_generation_prompt = true;
        // No trailing newline: jinja2 drops the template's last one.
        assert_eq!(render_prompt(&a).unwrap(), "<|begin_of_text|>f;g;Hi");
    }

    #[test]
    fn bad_inputs_are_reported() {
        let d = scratch("bad");
        let model = testdata("ggml-vocab-llama-bpe.gguf");
        let m = write(&d, "m.json", r#"{"msgs": []}"#);
        let e = render_prompt(&args(model.clone(), m)).unwrap_err();
        assert!(format!("{e:#}").contains("\"messages\""), "{e:#}");
        let m = write(&d, "m2.json", "[{\"role\": \"user\"");
        let e = render_prompt(&args(model.clone(), m.clone())).unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"), "{e:#}");
        let m = write(&d, "m3.json", "[]");
        let mut a = args(model, m);
        a.chat_template_file = Some(write(&d, "bad.jinja", "{% if %}"));
        let e = render_prompt(&a).unwrap_err();
        assert!(format!("{e:#}").contains("invalid chat template"), "{e:#}");
    }
}
