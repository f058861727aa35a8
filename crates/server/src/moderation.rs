//! The guard model on the serving path: `POST /v1/moderations` and the
//! shields that check a chat's prompt before generation and its reply as it
//! streams.

use crate::error::ApiError;
use crate::handlers::parse;
use crate::{AppState, ServedModel};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use edgellama_engine::batch::{Done, Event, FinishReason, Histogram, Usage};
use edgellama_engine::guard::{Guard, GuardOptions, GuardReport};
use edgellama_models::PreparedImage;
use edgellama_tokenizer::chat::guard::GuardPolicy;
use edgellama_tokenizer::chat::{ContentPart, MessageContent};
use edgellama_tokenizer::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// OpenAI's moderation categories and the Llama Guard 3 categories each
/// one covers (none where Llama Guard has no such hazard): a key is flagged
/// when one of its categories is, and scores their highest score.
pub const OPENAI_CATEGORIES: [(&str, &[&str]); 13] = [
    ("harassment", &[]),
    ("harassment/threatening", &[]),
    ("hate", &["S10"]),
    ("hate/threatening", &["S10"]),
    ("illicit", &["S2"]),
    ("illicit/violent", &["S1", "S9"]),
    ("self-harm", &["S11"]),
    ("self-harm/intent", &["S11"]),
    ("self-harm/instructions", &["S11"]),
    ("sexual", &["S3", "S12"]),
    ("sexual/minors", &["S4"]),
    ("violence", &["S1"]),
    ("violence/graphic", &[]),
];

/// Latency bounds of one guard check, in seconds.
const CHECK_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How the guard is used.
#[derive(Debug, Clone)]
pub struct ShieldSettings {
    /// Check the conversation before generating.
    pub input: bool,
    /// Check the reply as it is generated.
    pub output: bool,
    /// `flagged` from this probability of `unsafe` on.
    pub threshold: f32,
    /// The assistant's text when the input shield blocks a request.
    pub refusal: String,
    /// Categories left out of the guard's policy.
    pub excluded: Vec<String>,
    /// Reply text checked at a time by the output shield (bytes at least,
    /// at a whitespace boundary); the rest is held back until checked.
    pub output_chunk: usize,
}

impl Default for ShieldSettings {
    fn default() -> Self {
        ShieldSettings {
            input: false,
            output: false,
            threshold: 0.5,
            refusal: "I can't answer that. Can I help with something else?".into(),
            excluded: Vec::new(),
            output_chunk: 200,
        }
    }
}

#[derive(Default)]
struct ShieldMetrics {
    checks: BTreeMap<&'static str, AtomicU64>,
    blocks: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// The guard and its counters.
pub struct Shield {
    pub model: Arc<ServedModel>,
    pub guard: Guard,
    pub settings: ShieldSettings,
    metrics: ShieldMetrics,
    latency: Histogram,
}

/// Where a check happened (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Input,
    Output,
    Moderation,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Input => "input",
            Stage::Output => "output",
            Stage::Moderation => "moderation",
        }
    }
}

impl Shield {
    pub fn new(model: Arc<ServedModel>, guard: Guard, settings: ShieldSettings) -> Shield {
        let mut metrics = ShieldMetrics::default();
        for s in [Stage::Input, Stage::Output, Stage::Moderation] {
            metrics.checks.insert(s.label(), AtomicU64::new(0));
        }
        Shield {
            model,
            guard,
            settings,
            metrics,
            latency: Histogram::new(CHECK_BOUNDS),
        }
    }

    fn options(&self, category_scores: bool) -> GuardOptions {
        GuardOptions {
            policy: GuardPolicy {
                categories: None,
                excluded: self.settings.excluded.clone(),
            },
            threshold: self.settings.threshold,
            category_scores,
        }
    }

    /// Checks the last turn of `messages`, counted under `stage`.
    pub async fn check(
        &self,
        messages: &[ChatMessage],
        stage: Stage,
        category_scores: bool,
    ) -> Result<GuardReport, ApiError> {
        self.check_with_images(messages, &[], stage, category_scores)
            .await
    }

    /// [`Shield::check`] with the images of the conversation's image parts
    /// (a vision guard).
    pub async fn check_with_images(
        &self,
        messages: &[ChatMessage],
        images: &[Arc<PreparedImage>],
        stage: Stage,
        category_scores: bool,
    ) -> Result<GuardReport, ApiError> {
        let start = Instant::now();
        let r = self
            .guard
            .check_with_images(messages, images, &self.options(category_scores))
            .await?;
        self.latency.observe(start.elapsed());
        if let Some(c) = self.metrics.checks.get(stage.label()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if r.flagged && !matches!(stage, Stage::Moderation) {
            let mut blocks = self
                .metrics
                .blocks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let cats = if r.categories.is_empty() {
                vec!["none".to_string()]
            } else {
                r.categories.clone()
            };
            for c in cats {
                *blocks.entry((stage.label(), c)).or_default() += 1;
            }
        }
        Ok(r)
    }

    /// The shield's lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let name = "edgellama_guard_checks_total";
        let _ = writeln!(
            out,
            "# HELP {name} Guard checks, by where they ran.\n# TYPE {name} counter"
        );
        for (stage, c) in &self.metrics.checks {
            let _ = writeln!(
                out,
                "{name}{{stage=\"{stage}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let name = "edgellama_guard_blocks_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests a shield stopped, by stage and by the category the guard named.\n# TYPE {name} counter"
        );
        let blocks = self
            .metrics
            .blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ((stage, cat), n) in blocks.iter() {
            let _ = writeln!(out, "{name}{{stage=\"{stage}\",category=\"{cat}\"}} {n}");
        }
        crate::metrics::histogram(
            out,
            "edgellama_guard_check_seconds",
            "Time one guard check took.",
            &self.latency,
        );
    }
}

/// The conversation a shield shows the guard: user and assistant text
/// turns only (system prompts and tool traffic left out), consecutive turns
/// of one role joined, starting from a user turn.
pub fn shield_conversation(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in messages {
        if m.role != "user" && m.role != "assistant" {
            continue;
        }
        let text = m.text();
        if m.role == "assistant" && text.trim().is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                let joined = format!("{}\n\n{}", last.text(), text);
                last.content = Some(MessageContent::Text(joined));
            }
            None if m.role == "assistant" => {}
            _ => out.push(ChatMessage::new(m.role.clone(), text)),
        }
    }
    out
}

/// The output shield: passes a reply's events on once the guard has
/// judged the text they carry. Text is checked whenever
/// [`ShieldSettings::output_chunk`] bytes wait, and at the end; a flagged
/// check ends the reply with [`FinishReason::ContentFilter`] (the text of
/// the flagged part is never sent) and cancels the generation.
pub fn shield_output(
    st: Arc<AppState>,
    conversation: Vec<ChatMessage>,
    prompt_tokens: usize,
    mut rx: UnboundedReceiver<Event>,
) -> UnboundedReceiver<Event> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Some(shield) = st.shield.as_ref() else {
            return;
        };
        let chunk = shield.settings.output_chunk.max(1);
        let started = Instant::now();
        let mut released = String::new();
        let mut pending_text = String::new();
        let mut pending: Vec<Event> = Vec::new();
        let mut n_tokens = 0usize;
        // Whether the reply so far (released plus pending) may go out.
        let judge = |text: String| {
            let mut conv = conversation.clone();
            conv.push(ChatMessage::assistant(text));
            async move { shield.check(&conv, Stage::Output, false).await }
        };
        let block = |n_tokens: usize| {
            let now = started.elapsed();
            Event::Done(Done {
                finish: FinishReason::ContentFilter,
                tail: String::new(),
                usage: Usage {
                    prompt_tokens,
                    cached_tokens: 0,
                    completion_tokens: n_tokens,
                },
                time_to_first_token: now,
                total_time: now,
                end_logprob: None,
            })
        };
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token(t) => {
                    n_tokens += 1;
                    pending_text.push_str(&t.text);
                    pending.push(Event::Token(t));
                    if pending_text.len() < chunk {
                        continue;
                    }
                }
                Event::Done(d) => {
                    pending_text.push_str(&d.tail);
                    pending.push(Event::Done(d));
                }
                Event::Error(e) => {
                    let _ = tx.send(Event::Error(e));
                    return;
                }
            }
            let ended = matches!(pending.last(), Some(Event::Done(_)));
            if !pending_text.is_empty() || (ended && released.is_empty()) {
                match judge(format!("{released}{pending_text}")).await {
                    Ok(r) if r.flagged => {
                        // Dropping `rx` cancels the generation.
                        let _ = tx.send(block(n_tokens));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Event::Error(format!("the output shield failed: {e}")));
                        return;
                    }
                }
            }
            released.push_str(&pending_text);
            pending_text.clear();
            for ev in pending.drain(..) {
                if tx.send(ev).is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
        }
    });
    out
}

#[derive(Deserialize)]
struct ModerationRequest {
    input: Value,
    model: Option<String>,
}

/// One input of a moderation request, as a guard conversation: a string,
/// or a list of typed parts that make one input together (text, and an
/// `image_url` for a vision guard).
fn moderation_inputs(input: Value) -> Result<Vec<Vec<ChatMessage>>, ApiError> {
    let bad = |m: &str| ApiError::bad_param("input", m);
    match input {
        Value::String(s) => Ok(vec![vec![ChatMessage::user(s)]]),
        Value::Array(items) if items.is_empty() => Err(bad("input is empty")),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items
            .into_iter()
            .map(|s| vec![ChatMessage::user(s.as_str().unwrap_or_default())])
            .collect()),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for p in items {
                let part: ContentPart = serde_json::from_value(p).map_err(|_| {
                    bad("input must be a string, a list of strings, or a list of typed parts")
                })?;
                match part.kind.as_str() {
                    "text" if part.text.is_some() => parts.push(part),
                    "image_url" => parts.push(part),
                    "text" => return Err(bad("a text part needs a string `text`")),
                    k => return Err(bad(&format!("unknown input part type `{k}`"))),
                }
            }
            let n_images = parts.iter().filter(|p| p.kind == "image_url").count();
            if n_images > 1 {
                return Err(bad("a Llama Guard 3 Vision check takes one image"));
            }
            let mut m = ChatMessage::user("");
            m.content = Some(MessageContent::Parts(parts));
            Ok(vec![vec![m]])
        }
        _ => Err(bad(
            "input must be a string, a list of strings, or a list of parts",
        )),
    }
}

/// One result object of OpenAI's shape, plus the guard's own report.
pub fn moderation_result(r: &GuardReport) -> Value {
    let score = |code: &str| {
        r.category_scores
            .iter()
            .find(|(c, _)| c == code)
            .map_or(0.0, |(_, s)| *s)
    };
    let named = |code: &str| r.flagged && r.categories.iter().any(|c| c == code);
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for (key, codes) in OPENAI_CATEGORIES {
        let hit = codes.iter().any(|c| named(c));
        categories.insert(key.into(), json!(hit));
        let s = codes.iter().map(|c| score(c)).fold(0.0f64, f64::max);
        scores.insert(key.into(), json!(s));
        applied.insert(key.into(), if hit { json!(["text"]) } else { json!([]) });
    }
    for (code, s) in &r.category_scores {
        categories.insert(code.clone(), json!(named(code)));
        scores.insert(code.clone(), json!(s));
        applied.insert(
            code.clone(),
            if named(code) {
                json!(["text"])
            } else {
                json!([])
            },
        );
    }
    json!({
        "flagged": r.flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
        "llama_guard": r.to_json(),
    })
}

/// `POST /v1/moderations`.
pub async fn moderations(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ModerationRequest = parse(body, st.config.max_body_bytes)?;
    let Some(shield) = st.shield.as_ref() else {
        return Err(ApiError::NotFound(
            "this server has no guard model for moderations (start it with --guard-model)".into(),
        ));
    };
    if let Some(name) = req.model.as_deref().filter(|n| !n.is_empty()) {
        if name != shield.model.id {
            return Err(match st.models.iter().any(|m| m.id == name) {
                true => ApiError::bad_param(
                    "model",
                    format!(
                        "`{name}` is not a guard model; moderations use `{}`",
                        shield.model.id
                    ),
                ),
                false => ApiError::ModelNotFound(name.to_string()),
            });
        }
    }
    let inputs = moderation_inputs(req.input)?;
    let mut tasks = Vec::with_capacity(inputs.len());
    for mut conv in inputs {
        // Images are decoded off the async workers (slow work); a guard
        // that takes none refuses them.
        let support = shield.model.images.clone();
        let (conv_back, images) = tokio::task::spawn_blocking(move || {
            crate::images::take_images(&mut conv, support.as_ref()).map(|i| (conv, i))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("image preparation failed: {e}")))?
        .map_err(|e| match e {
            ApiError::BadRequest { message, .. } => ApiError::bad_param("input", message),
            e => e,
        })?;
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let shield = st.shield.as_ref().expect("checked above");
            shield
                .check_with_images(&conv_back, &images, Stage::Moderation, true)
                .await
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        let r = t
            .await
            .map_err(|e| ApiError::Internal(format!("guard check failed: {e}")))??;
        results.push(moderation_result(&r));
    }
    let id = format!(
        "modr-{:x}{:06x}",
        st.started,
        st.next_id.fetch_add(1, Ordering::Relaxed)
    );
    Ok(Json(json!({
        "id": id,
        "model": shield.model.id,
        "results": results,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shields_see_alternating_text_turns() {
        let msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::assistant("hello first"),
            ChatMessage::user("a"),
            ChatMessage::user("b"),
            ChatMessage::tool_calls(vec![]),
            ChatMessage::tool_result("42", None),
            ChatMessage::assistant("It is 42."),
        ];
        let conv = shield_conversation(&msgs);
        let roles: Vec<&str> = conv.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant"]);
        assert_eq!(conv[0].text(), "a\n\nb");
    }

    #[test]
    fn moderation_inputs_take_strings_lists_and_typed_parts() {
        assert_eq!(moderation_inputs(json!("x")).expect("ok").len(), 1);
        assert_eq!(moderation_inputs(json!(["x", "y"])).expect("ok").len(), 2);
        let parts = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        let one = moderation_inputs(parts).expect("ok");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0][0].text(), "ab");
        let img = json!({"type": "image_url", "image_url": {"url": "x"}});
        assert_eq!(
            moderation_inputs(json!([img.clone()])).expect("ok").len(),
            1
        );
        assert!(moderation_inputs(json!([img.clone(), img])).is_err());
        assert!(moderation_inputs(json!([{"type": "audio"}])).is_err());
        assert!(moderation_inputs(json!([{"type": "text"}])).is_err());
        assert!(moderation_inputs(json!([])).is_err());
        assert!(moderation_inputs(json!(3)).is_err());
    }
}
