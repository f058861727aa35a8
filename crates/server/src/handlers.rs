//! The endpoints.

use crate::error::ApiError;
use crate::generate::{self as gen, Choice, ConstraintSpec, Plan};
use crate::moderation::{shield_conversation, shield_output, Stage};
use crate::types::{ChatRequest, Common, CompletionRequest, Prompt, TemplateRequest};
use crate::{images, metrics as prom, unix_now, AppState, ServedModel};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use edgellama_engine::batch::{Event, TokenLogprob};
use edgellama_models::PreparedImage;
use edgellama_tokenizer::chat::MessageContent;
use edgellama_tokenizer::{ChatMessage, RenderRequest, Tokenizer};
use futures_util::stream::{self, SelectAll, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;

type AppResult<T> = Result<T, ApiError>;

/// The body as JSON of type `T`; every failure is a 400 (413 when too
/// large), never a panic.
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> AppResult<T> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::bad(format!("{what}: {e}"))
    })
}

pub async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn count_requests(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    st.http.count(r.status().as_u16());
    r
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(req.uri().path().to_string())
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

pub async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| {
            let cfg = m.engine.config();
            json!({
                "id": m.id,
                "object": "model",
                "created": st.started,
                "owned_by": "edgellama",
                "meta": {
                    // A sequence's context, as llama-server's slots report
                    // it; the pool all of them share beside it.
                    "n_ctx": cfg.n_ctx_seq(),
                    "n_ctx_total": cfg.n_ctx,
                    "kv_unified": cfg.kv_unified,
                    "cache_type_k": cfg.type_k.name(),
                    "cache_type_v": cfg.type_v.name(),
                    "n_parallel": cfg.n_parallel,
                    "n_vocab": m.tokenizer.vocab_size(),
                    "guard": st.shield.as_ref().is_some_and(|g| Arc::ptr_eq(&g.model, m)),
                },
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut text = prom::render(st.main().engine.metrics(), &st.http);
    if let Some(shield) = &st.shield {
        shield.render_metrics(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// [`images::take_images`] off the async workers: decoding (and
/// downloading) images is slow work.
async fn take_images(
    m: &ServedModel,
    messages: &mut Vec<ChatMessage>,
) -> AppResult<Vec<Arc<PreparedImage>>> {
    let support = m.images.clone();
    let mut taken = std::mem::take(messages);
    let (taken, images) = tokio::task::spawn_blocking(move || {
        images::take_images(&mut taken, support.as_ref()).map(|i| (taken, i))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("image preparation failed: {e}")))??;
    *messages = taken;
    Ok(images)
}

fn check_messages(messages: &[ChatMessage]) -> AppResult<()> {
    if messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if let Some(MessageContent::Parts(parts)) = &m.content {
            for p in parts {
                match p.kind.as_str() {
                    // Image parts were made bare by `images::take_images`.
                    "text" | "image" => {}
                    k => {
                        return Err(ApiError::Unsupported(format!(
                            "messages[{i}]: content parts of type '{k}' are not supported \
                             (text and image_url parts are accepted)"
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

fn render(
    m: &ServedModel,
    messages: Vec<ChatMessage>,
    tools: Option<Vec<Value>>,
    add_generation_prompt: bool,
) -> AppResult<String> {
    // Text parts become one string, as llama-server passes them: most
    // templates add `message['content']` to strings. Messages with images
    // keep their parts: vision templates render each image part as the
    // image token. (Other parts were refused by `check_messages`.)
    let messages = messages
        .into_iter()
        .map(|mut m| {
            if let Some(MessageContent::Parts(parts)) = &m.content {
                if parts.iter().all(|p| p.kind == "text") {
                    m.content = Some(MessageContent::Text(m.text()));
                }
            }
            m
        })
        .collect();
    let mut req = RenderRequest::new(messages).with_generation_prompt(add_generation_prompt);
    if let Some(t) = tools {
        req = req.with_tools(t);
    }
    match m.template.render(&req) {
        Ok(text) => Ok(text),
        // Templates written without tool calls in mind fail on an assistant
        // message that has calls and no content: give it the calls as text,
        // in the form the tool-call parser reads back.
        Err(e) if req.messages.iter().any(|m| m.tool_calls.is_some()) => {
            for m in req.messages.iter_mut() {
                if let (None, Some(calls)) = (&m.content, &m.tool_calls) {
                    let text: Vec<String> = calls
                        .iter()
                        .map(|c| {
                            let args = match &c.function.arguments {
                                Value::String(s) => {
                                    serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                                }
                                v => v.clone(),
                            };
                            json!({"name": c.function.name, "parameters": args}).to_string()
                        })
                        .collect();
                    m.content = Some(MessageContent::Text(text.join("\n")));
                }
            }
            m.template
                .render(&req)
                .map_err(|_| ApiError::bad_param("messages", e.to_string()))
        }
        Err(e) => Err(ApiError::bad_param("messages", e.to_string())),
    }
}

pub async fn apply_template(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    let mut req: TemplateRequest = parse(body, st.config.max_body_bytes)?;
    let m = st.model(req.model.as_deref())?;
    take_images(&m, &mut req.messages).await?;
    check_messages(&req.messages)?;
    let prompt = render(&m, req.messages, req.tools, req.add_generation_prompt)?;
    Ok(Json(json!({ "prompt": prompt })))
}

fn tool_names(tools: &[Value]) -> AppResult<Vec<String>> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| {
                    ApiError::bad_param("tools", format!("tools[{i}] has no function name"))
                })
        })
        .collect()
}

/// The schema a forced tool call must follow: `{"name": ..., "parameters":
/// {...}}` for one of `names`, the form the tool-call parser reads.
fn forced_call_schema(tools: &[Value], names: &[String]) -> Value {
    let alts: Vec<Value> = tools
        .iter()
        .filter_map(|t| {
            let f = t.get("function")?;
            let name = f.get("name")?.as_str()?;
            if !names.iter().any(|n| n == name) {
                return None;
            }
            let mut params = f
                .get("parameters")
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            // Parameters whose schema cannot be enforced still get a
            // well-formed call.
            if edgellama_engine::batch::JsonConstraint::from_schema(&params).is_err() {
                params = json!({"type": "object"});
            }
            Some(json!({
                "type": "object",
                "properties": {"name": {"const": name}, "parameters": params},
                "required": ["name", "parameters"],
                "additionalProperties": false,
            }))
        })
        .collect();
    json!({ "anyOf": alts })
}

fn common_plan(m: &Arc<ServedModel>, c: &Common, prompt: Vec<u32>) -> AppResult<Plan> {
    let n_vocab = m.tokenizer.vocab_size();
    Ok(Plan {
        target: m.clone(),
        prompt,
        n: gen::choices(c)?,
        max_tokens: gen::max_tokens(c),
        sampling: gen::sampling(c, n_vocab)?,
        stop: gen::stops(c)?,
        logprobs: None,
        constraint: None,
        tools: None,
        echo: Vec::new(),
        images: Vec::new(),
        speculative: c.speculative.unwrap_or(true),
    })
}

fn check_prompt_fits(m: &ServedModel, prompt: &[u32]) -> AppResult<()> {
    let n_ctx = m.engine.config().n_ctx_seq();
    if prompt.len() > n_ctx {
        return Err(ApiError::ContextLength {
            n_prompt: prompt.len(),
            n_ctx,
        });
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    Ok(())
}

fn new_id(st: &AppState, prefix: &str) -> String {
    format!(
        "{prefix}-{:x}{:06x}",
        st.started,
        st.next_id.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn chat(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let mut req: ChatRequest = parse(body, st.config.max_body_bytes)?;
    let m = st.model(req.common.model.as_deref())?;
    let images = take_images(&m, &mut req.messages).await?;
    check_messages(&req.messages)?;
    let mut tools = req.tools.clone().filter(|t| !t.is_empty());
    let mut forced: Option<Vec<String>> = None;
    let names = match &tools {
        Some(t) => Some(tool_names(t)?),
        None => None,
    };
    match (&req.tool_choice, &names) {
        (None, _) | (Some(Value::Null), _) => {}
        (Some(Value::String(s)), _) if s == "auto" => {}
        (Some(Value::String(s)), _) if s == "none" => tools = None,
        (Some(Value::String(s)), Some(names)) if s == "required" => forced = Some(names.clone()),
        (Some(v), Some(names)) if v.get("type").and_then(Value::as_str) == Some("function") => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_param("tool_choice", "tool_choice needs a function name")
                })?;
            if !names.iter().any(|n| n == name) {
                return Err(ApiError::bad_param(
                    "tool_choice",
                    format!("tool_choice names '{name}', which is not among the tools"),
                ));
            }
            forced = Some(vec![name.to_string()]);
        }
        (Some(v), _) => {
            return Err(ApiError::bad_param(
                "tool_choice",
                format!(
                    "unsupported tool_choice {v} (with tools: {})",
                    names.is_some()
                ),
            ))
        }
    }
    let text = render(&m, req.messages.clone(), tools.clone(), true)?;
    let prompt = m.template.encode(&m.tokenizer, &text);
    check_prompt_fits(&m, &prompt)?;
    if let Some(sup) = &m.images {
        let n_tokens = prompt.iter().filter(|&&t| t == sup.token).count();
        if n_tokens != images.len() {
            return Err(ApiError::bad_param(
                "messages",
                format!(
                    "the prompt has {n_tokens} image tokens for {} images (is '{}' written in a \
                     message's text?)",
                    images.len(),
                    sup.token_text
                ),
            ));
        }
    }
    let mut plan = common_plan(&m, &req.common, prompt)?;
    plan.images = images;
    if req.logprobs {
        plan.logprobs = Some(gen::top_logprobs(req.top_logprobs)?);
    }
    plan.constraint = gen::response_format(&req.response_format)?;
    if let (Some(t), Some(f)) = (&tools, &forced) {
        let spec = ConstraintSpec::Schema(forced_call_schema(t, f));
        spec.build()?;
        plan.constraint = Some(spec);
    }
    // Replies are read for calls when tools are offered and the output is
    // not held to a response format, or when a call is forced.
    if (tools.is_some() && plan.constraint.is_none()) || forced.is_some() {
        plan.tools = names;
    }
    let id = new_id(&st, "chatcmpl");
    // The shields guard the main model (a request to the guard itself is
    // not judged by it).
    let shield = st
        .shield
        .as_ref()
        .filter(|s| !Arc::ptr_eq(&s.model, &m) && (s.settings.input || s.settings.output));
    let conversation = shield.map(|_| shield_conversation(&req.messages));
    if let (Some(s), Some(conv)) = (shield, &conversation) {
        if s.settings.input && conv.last().is_some_and(|t| t.role == "user") {
            let r = s.check(conv, Stage::Input, false).await?;
            if r.flagged {
                let model = req.common.model.clone().unwrap_or_else(|| m.id.clone());
                let usage = req
                    .common
                    .stream_options
                    .as_ref()
                    .is_some_and(|o| o.include_usage);
                return Ok(refusal_response(
                    &s.settings.refusal,
                    &id,
                    &model,
                    req.common.stream,
                    usage,
                ));
            }
        }
    }
    let mut rxs = gen::submit(&plan)?;
    if let (Some(s), Some(conv)) = (shield, conversation) {
        if s.settings.output {
            let n_prompt = plan.prompt.len();
            rxs = rxs
                .into_iter()
                .map(|rx| shield_output(st.clone(), conv.clone(), n_prompt, rx))
                .collect();
        }
    }
    let model = req.common.model.clone().unwrap_or_else(|| m.id.clone());
    if req.common.stream {
        let usage = req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        Ok(stream_response(rxs, plan, id, model, Kind::Chat, usage))
    } else {
        let choices = collect(rxs, &plan).await;
        Ok(Json(whole_response(&choices, &plan, &id, &model, Kind::Chat)?).into_response())
    }
}

pub async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let req: CompletionRequest = parse(body, st.config.max_body_bytes)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::Unsupported(
            "suffix is not supported: this server has no fill-in-the-middle prompt format \
             for the model"
                .into(),
        ));
    }
    if req.echo && req.logprobs.is_some() {
        return Err(ApiError::Unsupported(
            "echo with logprobs is not supported (log-probabilities of prompt tokens are not \
             computed)"
                .into(),
        ));
    }
    let m = st.model(req.common.model.as_deref())?;
    let tok = &m.tokenizer;
    // Each prompt with the text `echo` gives back: the text as sent, or
    // what its token ids spell.
    let text = |t: String| (tok.encode(&t, tok.adds_bos(), true), t);
    let ids = |ids: Vec<u32>| (tok.decode(&ids, false), ids);
    let prompts: Vec<(Vec<u32>, String)> = match req.prompt {
        Prompt::Text(t) => vec![text(t)],
        Prompt::Tokens(v) => {
            let (t, v) = ids(v);
            vec![(v, t)]
        }
        Prompt::Texts(v) => v.into_iter().map(text).collect(),
        Prompt::TokenLists(v) => v
            .into_iter()
            .map(|v| {
                let (t, v) = ids(v);
                (v, t)
            })
            .collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_param(
            "prompt",
            "the list of prompts is empty",
        ));
    }
    if prompts.len() > gen::MAX_N as usize {
        return Err(ApiError::bad_param(
            "prompt",
            format!("at most {} prompts per request", gen::MAX_N),
        ));
    }
    let n_vocab = tok.vocab_size();
    for (prompt, _) in &prompts {
        check_prompt_fits(&m, prompt)?;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ApiError::bad_param(
                "prompt",
                format!("token id {bad} is outside the vocabulary of {n_vocab}"),
            ));
        }
    }
    let mut plan = common_plan(&m, &req.common, Vec::new())?;
    if prompts.len() * plan.n > gen::MAX_N as usize * 4 {
        return Err(ApiError::bad_param(
            "n",
            format!(
                "{} prompts times n = {} makes more than {} choices",
                prompts.len(),
                plan.n,
                gen::MAX_N * 4
            ),
        ));
    }
    if let Some(k) = req.logprobs {
        plan.logprobs = Some(gen::top_logprobs(Some(k))?);
    }
    plan.constraint = gen::response_format(&req.response_format)?;
    // Choices in order: those of the first prompt, then the second's, ...
    let mut rxs = Vec::new();
    for (prompt, text) in prompts {
        plan.prompt = prompt;
        rxs.extend(gen::submit(&plan)?);
        if req.echo {
            plan.echo.extend(std::iter::repeat_n(text, plan.n));
        }
    }
    let id = new_id(&st, "cmpl");
    let model = req.common.model.clone().unwrap_or_else(|| m.id.clone());
    if req.common.stream {
        let usage = req
            .common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        Ok(stream_response(
            rxs,
            plan,
            id,
            model,
            Kind::Completion,
            usage,
        ))
    } else {
        let choices = collect(rxs, &plan).await;
        Ok(Json(whole_response(
            &choices,
            &plan,
            &id,
            &model,
            Kind::Completion,
        )?)
        .into_response())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn collect(rxs: Vec<UnboundedReceiver<Event>>, plan: &Plan) -> Vec<Choice> {
    let mut out = Vec::with_capacity(rxs.len());
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let mut c = Choice::new(i, plan.tools.clone());
        loop {
            match rx.recv().await {
                Some(ev) => {
                    let end = matches!(ev, Event::Done(_) | Event::Error(_));
                    c.push(ev);
                    if end {
                        break;
                    }
                }
                None => {
                    c.error = Some("the engine stopped".into());
                    break;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Token counts of a response whose choices come `n` per prompt: each
/// prompt counted once.
fn usage_json(choices: &[Choice], n: usize) -> Value {
    let (mut prompt, mut cached) = (0, 0);
    for group in choices.chunks(n.max(1)) {
        if let Some(d) = group.iter().find_map(|c| c.done.as_ref()) {
            prompt += d.usage.prompt_tokens;
            cached += d.usage.cached_tokens;
        }
    }
    let completion: usize = choices
        .iter()
        .filter_map(|c| c.done.as_ref())
        .map(|d| d.usage.completion_tokens)
        .sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.piece(id, true).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let (t, b) = token_text(tok, lp.id);
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| {
                    let (t, b) = token_text(tok, id);
                    json!({"token": t, "logprob": l, "bytes": b})
                })
                .collect();
            json!({"token": t, "logprob": lp.logprob, "bytes": b, "top_logprobs": top})
        })
        .collect();
    json!({ "content": content })
}

fn completion_logprobs(tok: &Tokenizer, lps: &[TokenLogprob], offset0: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    let mut off = offset0;
    for lp in lps {
        let (t, _) = token_text(tok, lp.id);
        offsets.push(off);
        off += t.len();
        tokens.push(t);
        token_lps.push(lp.logprob);
        let m: serde_json::Map<String, Value> = lp
            .top
            .iter()
            .map(|&(id, l)| (token_text(tok, id).0, json!(l)))
            .collect();
        tops.push(Value::Object(m));
    }
    json!({"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets})
}

fn whole_response(
    choices: &[Choice],
    plan: &Plan,
    id: &str,
    model: &str,
    kind: Kind,
) -> AppResult<Value> {
    if let Some(e) = choices.iter().find_map(|c| c.error.clone()) {
        return Err(ApiError::Internal(e));
    }
    let tok = &plan.target.tokenizer;
    let items: Vec<Value> = choices
        .iter()
        .map(|c| {
            let fin = c.finish();
            let has_lp = c.done.is_some() && !c.logprobs.is_empty();
            match kind {
                Kind::Chat => {
                    let mut msg = json!({"role": "assistant", "content": fin.content});
                    if !fin.tool_calls.is_empty() {
                        msg["tool_calls"] =
                            gen::tool_calls_json(&fin.tool_calls, &format!("{id}_{}", c.index), false);
                    }
                    json!({
                        "index": c.index,
                        "message": msg,
                        "logprobs": if has_lp { chat_logprobs(tok, &c.logprobs) } else { Value::Null },
                        "finish_reason": fin.finish_reason,
                    })
                }
                Kind::Completion => json!({
                    "index": c.index,
                    "text": match plan.echo.get(c.index) {
                        Some(echo) => format!("{echo}{}", c.text),
                        None => c.text.clone(),
                    },
                    "logprobs": if has_lp { completion_logprobs(tok, &c.logprobs, 0) } else { Value::Null },
                    "finish_reason": fin.finish_reason,
                }),
            }
        })
        .collect();
    Ok(json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": unix_now(),
        "model": model,
        "system_fingerprint": "edgellama",
        "choices": items,
        "usage": usage_json(choices, plan.n),
    }))
}

type Merged = SelectAll<stream::BoxStream<'static, (usize, Event)>>;

/// The state of one streamed response.
struct Streamer {
    target: Arc<ServedModel>,
    merged: Merged,
    choices: Vec<Choice>,
    id: String,
    model: String,
    kind: Kind,
    include_usage: bool,
    created: u64,
    ended: bool,
    /// Bytes of text streamed per choice (completion logprob offsets).
    offsets: Vec<usize>,
    /// Choices per prompt (usage counts each prompt once).
    n_per_prompt: usize,
}

impl Streamer {
    fn chunk(&self, choices: Vec<Value>) -> SseEvent {
        let v = json!({
            "id": self.id,
            "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "edgellama",
            "choices": choices,
        });
        let mut v = v;
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        SseEvent::default().data(v.to_string())
    }

    fn text_chunk(&mut self, i: usize, text: String, finish: Option<&str>) -> Option<SseEvent> {
        let lps = std::mem::take(&mut self.choices[i].unsent_logprobs);
        if text.is_empty() && finish.is_none() && lps.is_empty() {
            return None;
        }
        let tok = &self.target.tokenizer;
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": i,
                "delta": if text.is_empty() && finish.is_some() { json!({}) } else { json!({"content": text}) },
                "logprobs": if lps.is_empty() { Value::Null } else { chat_logprobs(tok, &lps) },
                "finish_reason": finish,
            }),
            Kind::Completion => {
                let off = self.offsets[i];
                self.offsets[i] += text.len();
                json!({
                    "index": i,
                    "text": text,
                    "logprobs": if lps.is_empty() { Value::Null } else { completion_logprobs(tok, &lps, off) },
                    "finish_reason": finish,
                })
            }
        };
        Some(self.chunk(vec![choice]))
    }

    fn on_event(&mut self, i: usize, ev: Event) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let end = matches!(ev, Event::Done(_) | Event::Error(_));
        let Some(c) = self.choices.get_mut(i) else {
            return out;
        };
        let text = c.push(ev);
        if let Some(e) = c.error.clone() {
            out.push(SseEvent::default().data(ApiError::Internal(e).body().to_string()));
            return out;
        }
        if !end {
            out.extend(self.text_chunk(i, text, None));
            return out;
        }
        let fin = self.choices[i].finish();
        let mut rest = text;
        rest.push_str(&self.choices[i].final_text(&fin));
        if !fin.tool_calls.is_empty() && self.kind == Kind::Chat {
            out.extend(self.text_chunk(i, rest, None));
            let calls = gen::tool_calls_json(&fin.tool_calls, &format!("{}_{i}", self.id), true);
            out.push(self.chunk(vec![json!({
                "index": i,
                "delta": {"tool_calls": calls},
                "logprobs": Value::Null,
                "finish_reason": Value::Null,
            })]));
            out.extend(self.text_chunk(i, String::new(), Some(fin.finish_reason)));
        } else {
            out.extend(self.text_chunk(i, rest, Some(fin.finish_reason)));
        }
        out
    }

    fn closing(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.include_usage {
            let mut v = json!({
                "id": self.id,
                "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "edgellama",
                "choices": [],
            });
            v["usage"] = usage_json(&self.choices, self.n_per_prompt);
            out.push(SseEvent::default().data(v.to_string()));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

fn stream_response(
    rxs: Vec<UnboundedReceiver<Event>>,
    plan: Plan,
    id: String,
    model: String,
    kind: Kind,
    include_usage: bool,
) -> Response {
    let n = rxs.len();
    let merged: Merged = stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| {
        UnboundedReceiverStream::new(rx)
            .map(move |ev| (i, ev))
            .boxed()
    }));
    let s = Streamer {
        target: plan.target.clone(),
        merged,
        choices: (0..n).map(|i| Choice::new(i, plan.tools.clone())).collect(),
        id,
        model,
        kind,
        include_usage,
        created: unix_now(),
        ended: false,
        offsets: vec![0; n],
        n_per_prompt: plan.n,
    };
    // Chat streams open each choice with the assistant role.
    let opening: Vec<SseEvent> = if kind == Kind::Chat {
        (0..n)
            .map(|i| {
                s.chunk(vec![json!({
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": Value::Null,
                    "finish_reason": Value::Null,
                })])
            })
            .collect()
    } else {
        // `echo`: each choice opens with its prompt.
        plan.echo
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_empty())
            .map(|(i, e)| {
                s.chunk(vec![json!({
                    "index": i,
                    "text": e,
                    "logprobs": Value::Null,
                    "finish_reason": Value::Null,
                })])
            })
            .collect()
    };
    let body = stream::iter(opening)
        .chain(
            stream::unfold(s, |mut s| async move {
                if s.ended {
                    return None;
                }
                match s.merged.next().await {
                    Some((i, ev)) => {
                        let out = s.on_event(i, ev);
                        Some((out, s))
                    }
                    None => {
                        s.ended = true;
                        let out = s.closing();
                        Some((out, s))
                    }
                }
            })
            .flat_map(stream::iter),
        )
        .map(Ok::<_, Infallible>);
    let mut r = Sse::new(body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// The reply to a request the input shield blocked: a normal completion
/// whose text is the refusal, `finish_reason: "content_filter"`, no tokens
/// of the main model spent.
fn refusal_response(
    refusal: &str,
    id: &str,
    model: &str,
    stream: bool,
    include_usage: bool,
) -> Response {
    let created = unix_now();
    let usage = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
    if !stream {
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "edgellama",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": refusal},
                "logprobs": Value::Null,
                "finish_reason": "content_filter",
            }],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "edgellama",
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        SseEvent::default().data(v.to_string())
    };
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": refusal}), Value::Null),
        chunk(json!({}), json!("content_filter")),
    ];
    if include_usage {
        let v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "edgellama",
            "choices": [],
            "usage": usage,
        });
        events.push(SseEvent::default().data(v.to_string()));
    }
    events.push(SseEvent::default().data("[DONE]"));
    let mut r = Sse::new(stream::iter(events.into_iter().map(Ok::<_, Infallible>))).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}
