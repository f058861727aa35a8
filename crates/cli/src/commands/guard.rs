//! `edgellama guard`: classify a prompt or a reply with a Llama Guard model.

use crate::commands::chat::load_template;
use crate::load;
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::batch::{Engine, EngineConfig};
use edgellama_engine::guard::{Guard, GuardOptions, GuardReport};
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_tokenizer::chat::guard::GuardPolicy;
use edgellama_tokenizer::chat::{ContentPart, MessageContent};
use edgellama_tokenizer::ChatMessage;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct GuardArgs {
    #[command(flatten)]
    pub model: load::ModelArgs,
    /// The text to judge, as a user's prompt.
    #[arg(short = 'p', long = "prompt", conflicts_with = "messages")]
    pub prompt: Option<String>,
    /// A conversation (JSON list of messages, or an object with a
    /// `messages` list): its last message is judged, a prompt if it is the
    /// user's, a reply if it is the assistant's. System messages are left out.
    #[arg(long = "messages")]
    pub messages: Option<PathBuf>,
    /// An image the judged turn shows, for a vision guard (Llama Guard 3
    /// 11B-Vision): it joins the last user message.
    #[arg(long = "image")]
    pub image: Option<PathBuf>,
    /// Category codes to leave out of the policy (comma-separated: S6,S8).
    #[arg(long = "exclude", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// A custom policy: a JSON object of category codes and descriptions
    /// ({"S1": "Violent Crimes.", ...}), in the order the prompt lists them.
    #[arg(long = "categories")]
    pub categories: Option<PathBuf>,
    /// `flagged` from this probability of "unsafe" on.
    #[arg(long = "threshold", default_value_t = 0.5)]
    pub threshold: f32,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long = "json")]
    pub json: bool,
    /// Print the rendered guard prompt to stderr first.
    #[arg(long = "show-prompt")]
    pub show_prompt: bool,
    /// Context size (prompt and reply together).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 8192)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn parse_messages(path: &Path) -> Result<Vec<ChatMessage>> {
    let doc = read_json(path, "messages")?;
    let list = match doc {
        Value::Object(mut o) => o.remove("messages").unwrap_or(Value::Null),
        v => v,
    };
    if !list.is_array() {
        bail!(
            "{}: expected a list of messages or an object with \"messages\"",
            path.display()
        );
    }
    serde_json::from_value(list).with_context(|| format!("{}: invalid messages", path.display()))
}

/// A custom category list from a JSON object, in its order.
pub fn parse_categories(doc: Value, origin: &str) -> Result<Vec<(String, String)>> {
    let Value::Object(map) = doc else {
        bail!("{origin}: expected an object of category codes and descriptions");
    };
    if map.is_empty() {
        bail!("{origin}: the category list is empty");
    }
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => bail!("{origin}: the description of {k} is not a string"),
        })
        .collect()
}

pub fn run(a: GuardArgs) -> Result<()> {
    let threads = a.threads.resolve()?;
    if !(0.0..=1.0).contains(&a.threshold) {
        bail!("--threshold must be within [0, 1], got {}", a.threshold);
    }
    if a.ctx_size < 16 {
        bail!("-c must be at least 16, got {}", a.ctx_size);
    }
    let messages = match (&a.prompt, &a.messages) {
        (Some(p), None) => vec![ChatMessage::user(p.clone())],
        (None, Some(path)) => parse_messages(path)?,
        _ => bail!("give the text to judge with -p TEXT or --messages FILE"),
    };
    let categories = match &a.categories {
        Some(p) => Some(parse_categories(
            read_json(p, "categories")?,
            &p.display().to_string(),
        )?),
        None => None,
    };
    let exclude: Vec<String> = a
        .exclude
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let opts = GuardOptions {
        policy: GuardPolicy {
            categories,
            excluded: exclude,
        },
        threshold: a.threshold,
        category_scores: true,
    };
    let mut messages = messages;
    let image = match &a.image {
        Some(p) => {
            let file = crate::images::read(std::slice::from_ref(p))?;
            let Some(last_user) = messages.iter_mut().rev().find(|m| m.role == "user") else {
                bail!("--image needs a user message to join");
            };
            let mut parts = match last_user.content.take() {
                Some(MessageContent::Parts(p)) => p,
                _ => vec![ContentPart {
                    kind: "text".into(),
                    text: Some(last_user.text()),
                    extra: Default::default(),
                }],
            };
            parts.insert(
                0,
                ContentPart {
                    kind: "image".into(),
                    text: None,
                    extra: Default::default(),
                },
            );
            last_user.content = Some(MessageContent::Parts(parts));
            file.into_iter().next()
        }
        None => None,
    };
    // The conversation's shape is checked before anything is loaded.
    edgellama_tokenizer::chat::guard::guard_conversation(&messages)?;
    let template_src = match &a.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read chat template {}", p.display()))?,
        ),
        None => None,
    };

    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let tokenizer = Arc::new(load::tokenizer(&file, &path)?);
    let template = load_template(&file, &path, template_src.as_deref())?;
    let model: Arc<dyn edgellama_models::CausalLm> = Arc::from(load::model(&file, &path, threads)?);
    let n_ctx = a.ctx_size.min(model.info().n_ctx_train.max(16));
    let images = match &image {
        Some(im) => {
            let cfg = crate::images::preprocess_config(model.info())?;
            let prepared = preprocess::prepare(&im.bytes, &ImageLimits::default(), cfg)
                .with_context(|| format!("cannot use the image {}", im.path.display()))?;
            vec![Arc::new(prepared)]
        }
        None => Vec::new(),
    };
    let engine = Engine::start(
        model,
        tokenizer.clone(),
        EngineConfig {
            n_parallel: 1,
            n_ctx,
            max_queue: 4,
            batch_tokens: 512,
            ..EngineConfig::default()
        },
    )
    .context("cannot start the engine")?;
    let guard = Guard::new(engine, tokenizer, Arc::new(template))
        .with_context(|| format!("{} cannot be used as a guard", path.display()))?;
    if a.show_prompt {
        eprintln!("{}", guard.prompt_text(&messages, &opts.policy)?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(guard.check_with_images(&messages, &images, &opts))?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &GuardReport) {
    let verdict = if r.unsafe_ { "unsafe" } else { "safe" };
    if r.categories.is_empty() {
        println!("{verdict}");
    } else {
        println!("{verdict} {}", r.categories.join(","));
    }
    println!(
        "unsafe_probability {:.6}{}",
        r.unsafe_probability,
        if r.flagged { " (flagged)" } else { "" }
    );
    for (code, s) in &r.category_scores {
        println!("  {code:<4} {s:.6}");
    }
}
