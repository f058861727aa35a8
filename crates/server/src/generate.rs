//! From a validated request to engine submissions and back to OpenAI's
//! response objects, whole or as a stream of chunks.

use crate::error::ApiError;
use crate::types::Common;
use crate::ServedModel;
use edgellama_engine::batch::{
    Constraint, Done, Event, FinishReason, JsonConstraint, Request, TokenLogprob,
};
use edgellama_models::PreparedImage;
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::chat::tools::{
    parse_reply_with, streamable_prefix_len, ToolCall, ToolParseOptions,
};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Choices per request at most.
pub const MAX_N: u64 = 16;
/// Alternatives per token at most (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// What every choice of a request is generated with.
pub struct Plan {
    /// The model that generates.
    pub target: Arc<ServedModel>,
    pub prompt: Vec<u32>,
    pub n: usize,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
    /// Builds each choice's output constraint (JSON schema, forced tool call).
    pub constraint: Option<ConstraintSpec>,
    /// Tool names, when tool calls are read from the reply.
    pub tools: Option<Vec<String>>,
    /// Completions' `echo`: the prompt text each choice starts with.
    pub echo: Vec<String>,
    /// The prompt's images, in the order of its image tokens.
    pub images: Vec<Arc<PreparedImage>>,
    /// Whether the engine may draft for this request.
    pub speculative: bool,
}

#[derive(Clone)]
pub enum ConstraintSpec {
    JsonObject,
    Schema(Value),
}

impl ConstraintSpec {
    pub fn build(&self) -> Result<Box<dyn Constraint>, ApiError> {
        Ok(match self {
            ConstraintSpec::JsonObject => Box::new(JsonConstraint::object()),
            ConstraintSpec::Schema(s) => Box::new(
                JsonConstraint::from_schema(s)
                    .map_err(|e| ApiError::bad_param("response_format", e.to_string()))?,
            ),
        })
    }
}

fn check_range(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= lo && x <= hi) => Err(ApiError::bad_param(
            name,
            format!("{name} must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// Sampling settings from the request: llama.cpp's defaults for what is
/// not given.
pub fn sampling(c: &Common, n_vocab: usize) -> Result<SamplingParams, ApiError> {
    check_range("temperature", c.temperature, 0.0, 100.0)?;
    check_range("top_p", c.top_p, 0.0, 1.0)?;
    check_range("min_p", c.min_p, 0.0, 1.0)?;
    check_range("typical_p", c.typical_p, 0.0, 1.0)?;
    check_range("presence_penalty", c.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", c.frequency_penalty, -2.0, 2.0)?;
    check_range("repeat_penalty", c.repeat_penalty, 0.0, 100.0)?;
    let mut p = SamplingParams::default();
    if let Some(t) = c.temperature {
        p.temperature = t;
    }
    if let Some(v) = c.top_p {
        p.top_p = v.max(f32::MIN_POSITIVE);
    }
    if let Some(v) = c.top_k {
        p.top_k = v.min(n_vocab as u64) as usize;
    }
    if let Some(v) = c.min_p {
        p.min_p = v;
    }
    if let Some(v) = c.typical_p {
        p.typical_p = v.max(f32::MIN_POSITIVE);
    }
    if let Some(v) = c.presence_penalty {
        p.presence_penalty = v;
    }
    if let Some(v) = c.frequency_penalty {
        p.frequency_penalty = v;
    }
    if let Some(v) = c.repeat_penalty {
        p.repeat_penalty = v.max(f32::MIN_POSITIVE);
    }
    if let Some(v) = c.repeat_last_n {
        p.penalty_last_n = v.min(1 << 16) as usize;
    }
    p.seed = c.seed.unwrap_or_else(random_seed);
    if let Some(bias) = &c.logit_bias {
        for (k, &b) in bias {
            let id: u32 = k.trim().parse().map_err(|_| {
                ApiError::bad_param("logit_bias", format!("'{k}' is not a token id"))
            })?;
            if id as usize >= n_vocab {
                return Err(ApiError::bad_param(
                    "logit_bias",
                    format!("token id {id} is outside the vocabulary of {n_vocab}"),
                ));
            }
            if !b.is_finite() {
                return Err(ApiError::bad_param("logit_bias", "biases must be finite"));
            }
            // OpenAI's range: -100 bans a token, 100 forces it.
            let b = b.clamp(-100.0, 100.0);
            p.logit_bias
                .push((id, if b <= -100.0 { f32::NEG_INFINITY } else { b }));
        }
    }
    p.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(p)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

pub fn max_tokens(c: &Common) -> Option<usize> {
    c.max_completion_tokens
        .or(c.max_tokens)
        .map(|m| m.min(usize::MAX as u64) as usize)
}

pub fn choices(c: &Common) -> Result<usize, ApiError> {
    match c.n {
        None => Ok(1),
        Some(n) if (1..=MAX_N).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_param(
            "n",
            format!("n must be between 1 and {MAX_N}, got {n}"),
        )),
    }
}

pub fn stops(c: &Common) -> Result<Vec<String>, ApiError> {
    let v = c.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if v.len() > 16 {
        return Err(ApiError::bad_param("stop", "at most 16 stop strings"));
    }
    Ok(v.into_iter().filter(|s| !s.is_empty()).collect())
}

pub fn top_logprobs(k: Option<u64>) -> Result<usize, ApiError> {
    match k {
        Some(k) if k > MAX_TOP_LOGPROBS => Err(ApiError::bad_param(
            "top_logprobs",
            format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
        )),
        k => Ok(k.unwrap_or(0) as usize),
    }
}

/// `response_format`: `text`, `json_object`, or `json_schema`.
pub fn response_format(v: &Option<Value>) -> Result<Option<ConstraintSpec>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_param("response_format", "response_format needs a 'type'"))?;
    let spec = match kind {
        "text" => return Ok(None),
        "json_object" => ConstraintSpec::JsonObject,
        "json_schema" => {
            let schema = v
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                // llama-server's shorter form.
                .or_else(|| v.get("schema"))
                .cloned()
                .unwrap_or(json!({}));
            ConstraintSpec::Schema(schema)
        }
        other => {
            return Err(ApiError::bad_param(
                "response_format",
                format!("unknown response_format type '{other}'"),
            ))
        }
    };
    // Compile once now so a bad schema is a 400 before anything runs.
    spec.build()?;
    Ok(Some(spec))
}

/// Submits every choice; on failure the ones already queued are
/// cancelled by dropping their receivers.
pub fn submit(plan: &Plan) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
    let mut rxs = Vec::with_capacity(plan.n);
    for i in 0..plan.n {
        let mut sampling = plan.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(i as u64);
        let req = Request {
            prompt: plan.prompt.clone(),
            max_tokens: plan.max_tokens,
            sampling,
            stop: plan.stop.clone(),
            special: plan.tools.is_some(),
            logprobs: plan.logprobs,
            watch: Vec::new(),
            constraint: match &plan.constraint {
                Some(c) => Some(c.build()?),
                None => None,
            },
            images: plan.images.clone(),
            speculative: plan.speculative,
        };
        let rx = plan.target.engine.submit(req)?;
        rxs.push(rx);
    }
    Ok(rxs)
}

pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::EndOfGeneration | FinishReason::StopString(_) | FinishReason::Cancelled => {
            "stop"
        }
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// One choice as it is generated: the text so far, what of it has been
/// streamed, and the token log-probabilities.
pub struct Choice {
    pub index: usize,
    pub text: String,
    pub sent: usize,
    pub logprobs: Vec<TokenLogprob>,
    /// Log-probabilities not yet streamed.
    pub unsent_logprobs: Vec<TokenLogprob>,
    pub done: Option<Done>,
    pub error: Option<String>,
    /// Whether text that may be a tool call is held back.
    pub tools: Option<Vec<String>>,
}

/// What a choice gives once its reply is complete.
pub struct Final {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: &'static str,
}

impl Choice {
    pub fn new(index: usize, tools: Option<Vec<String>>) -> Choice {
        Choice {
            index,
            text: String::new(),
            sent: 0,
            logprobs: Vec::new(),
            unsent_logprobs: Vec::new(),
            done: None,
            error: None,
            tools,
        }
    }

    /// Takes one event in; returns the text that may be streamed now.
    pub fn push(&mut self, ev: Event) -> String {
        match ev {
            Event::Token(t) => {
                self.text.push_str(&t.text);
                if let Some(lp) = t.logprob {
                    self.logprobs.push(lp.clone());
                    self.unsent_logprobs.push(lp);
                }
            }
            Event::Done(d) => {
                self.text.push_str(&d.tail);
                self.done = Some(d);
            }
            Event::Error(e) => self.error = Some(e),
        }
        let upto = if self.tools.is_some() && self.done.is_none() {
            streamable_prefix_len(&self.text)
        } else if self.tools.is_some() {
            // The rest is decided by `finish`.
            self.sent
        } else {
            self.text.len()
        };
        if upto > self.sent {
            let s = self.text[self.sent..upto].to_string();
            self.sent = upto;
            s
        } else {
            String::new()
        }
    }

    pub fn finish(&self) -> Final {
        let reason = self
            .done
            .as_ref()
            .map_or("stop", |d| finish_reason(d.finish));
        // A stopped reply is not read for calls: its text is cut short.
        let tools = self.tools.as_ref().filter(|_| reason != "content_filter");
        match tools {
            None => Final {
                content: Some(self.text.clone()),
                tool_calls: Vec::new(),
                finish_reason: reason,
            },
            Some(names) => {
                let opts = ToolParseOptions {
                    known_tools: Some(names.clone()),
                };
                let parsed = parse_reply_with(&self.text, &opts);
                if parsed.tool_calls.is_empty() {
                    Final {
                        content: Some(self.text.clone()),
                        tool_calls: Vec::new(),
                        finish_reason: reason,
                    }
                } else {
                    Final {
                        content: (!parsed.content.is_empty()).then_some(parsed.content),
                        tool_calls: parsed.tool_calls,
                        finish_reason: "tool_calls",
                    }
                }
            }
        }
    }

    /// Text not streamed yet that belongs in the reply's content, once the
    /// reply is complete.
    pub fn final_text(&self, fin: &Final) -> String {
        let content = fin.content.as_deref().unwrap_or("");
        let sent = &self.text[..self.sent];
        match content.strip_prefix(sent) {
            Some(rest) => rest.to_string(),
            // Parsing trimmed what was already sent: send nothing more
            // rather than repeat it.
            None => String::new(),
        }
    }
}

/// OpenAI's `tool_calls` array.
pub fn tool_calls_json(calls: &[ToolCall], id_base: &str, with_index: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": format!("call_{id_base}_{i}"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                });
                if with_index {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellama_engine::batch::{TokenEvent, Usage};
    use std::time::Duration;

    fn token(text: &str) -> Event {
        Event::Token(TokenEvent {
            id: 0,
            text: text.into(),
            logprob: None,
        })
    }

    fn done(finish: FinishReason) -> Event {
        Event::Done(Done {
            finish,
            tail: String::new(),
            usage: Usage::default(),
            time_to_first_token: Duration::ZERO,
            total_time: Duration::ZERO,
            end_logprob: None,
        })
    }

    /// Streams a reply piece by piece; returns what was sent on the way
    /// and the final result.
    fn play(tools: Option<Vec<String>>, pieces: &[&str]) -> (Vec<String>, Final, String) {
        let mut c = Choice::new(0, tools);
        let mut sent = Vec::new();
        for p in pieces {
            sent.push(c.push(token(p)));
        }
        let last = c.push(done(FinishReason::EndOfGeneration));
        let fin = c.finish();
        let rest = format!("{last}{}", c.final_text(&fin));
        (sent, fin, rest)
    }

    #[test]
    fn a_tool_call_is_held_back_and_returned_as_a_call() {
        let tools = Some(vec!["get_weather".to_string()]);
        let (sent, fin, rest) = play(
            tools,
            &[
                "{\"name\": \"get",
                "_weather\", \"parameters\": ",
                "{\"city\": \"Paris\"}}",
            ],
        );
        assert!(sent.iter().all(String::is_empty), "{sent:?}");
        assert_eq!(rest, "");
        assert_eq!(fin.finish_reason, "tool_calls");
        assert_eq!(fin.content, None);
        assert_eq!(fin.tool_calls.len(), 1);
        assert_eq!(fin.tool_calls[0].name, "get_weather");
        assert_eq!(fin.tool_calls[0].arguments, json!({"city": "Paris"}));
        let calls = tool_calls_json(&fin.tool_calls, "x", true);
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(calls[0]["index"], 0);
    }

    #[test]
    fn prose_streams_while_tools_are_offered() {
        let tools = Some(vec!["get_weather".to_string()]);
        let pieces = ["It is", " sunny", " in Paris", " today."];
        let (sent, fin, rest) = play(tools, &pieces);
        // Held only while it might still be a call, then released as it
        // comes; nothing is lost or repeated.
        assert!(
            sent.iter().filter(|s| !s.is_empty()).count() >= 2,
            "{sent:?}"
        );
        assert_eq!(format!("{}{rest}", sent.concat()), pieces.concat());
        assert_eq!(fin.content.as_deref(), Some(pieces.concat().as_str()));
        assert_eq!(fin.finish_reason, "stop");
        assert!(fin.tool_calls.is_empty());
    }

    #[test]
    fn an_unknown_tool_name_stays_text() {
        let tools = Some(vec!["get_weather".to_string()]);
        let reply = "{\"name\": \"launch\", \"parameters\": {}}";
        let (sent, fin, rest) = play(tools, &[reply]);
        assert_eq!(format!("{}{rest}", sent.concat()), reply);
        assert!(fin.tool_calls.is_empty());
        assert_eq!(fin.finish_reason, "stop");
    }

    #[test]
    fn without_tools_text_streams_at_once() {
        let (sent, fin, rest) = play(None, &["{\"name\": ", "\"x\"}"]);
        assert_eq!(sent, ["{\"name\": ", "\"x\"}"]);
        assert_eq!(rest, "");
        assert_eq!(fin.content.as_deref(), Some("{\"name\": \"x\"}"));
        let c = Choice::new(0, None);
        assert_eq!(c.finish().finish_reason, "stop");
        assert_eq!(finish_reason(FinishReason::ContextFull), "length");
        assert_eq!(finish_reason(FinishReason::StopString(0)), "stop");
    }

    #[test]
    fn request_fields_are_validated() {
        let c = Common {
            temperature: Some(f32::NAN),
            ..Default::default()
        };
        assert!(sampling(&c, 100).is_err());
        let c = Common {
            logit_bias: Some([("7".to_string(), -100.0)].into_iter().collect()),
            seed: Some(5),
            ..Default::default()
        };
        let p = sampling(&c, 100).unwrap();
        assert_eq!(p.logit_bias, vec![(7, f32::NEG_INFINITY)]);
        assert_eq!(p.seed, 5);
        let c = Common {
            logit_bias: Some([("abc".to_string(), 1.0)].into_iter().collect()),
            ..Default::default()
        };
        assert!(sampling(&c, 100).is_err());
        assert!(choices(&Common {
            n: Some(17),
            ..Default::default()
        })
        .is_err());
        assert!(top_logprobs(Some(21)).is_err());
        assert!(response_format(&Some(json!({"type": "xml"}))).is_err());
        assert!(response_format(&Some(json!({"type": "text"})))
            .unwrap()
            .is_none());
    }
}
