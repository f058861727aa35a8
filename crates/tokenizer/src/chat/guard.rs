//! Llama Guard 3: the prompt a guard model classifies and the verdict it
//! writes back.
//!
//! The prompt is the model's own chat template where it has one that takes
//! categories (Llama Guard 3 1B and 11B-Vision: content as a list of text
//! parts, `categories` and `excluded_category_keys` as variables), rendered as
//! jinja2 renders it through Hugging Face's `apply_chat_template`. A file with
//! no template, or one that cannot take the categories asked for (the 8B's
//! template lists its categories itself), gets Meta's Llama Guard 3 prompt,
//! worded as Meta's Llama Stack words it (including its "according our safety
//! policy"), as one user turn of the Llama 3 chat format.
//!
//! The verdict is parsed as Llama Stack parses it: the reply, trimmed, is
//! `safe`, or `unsafe`, a newline and comma-separated category codes.

use super::RenderRequest;
use super::{ChatMessage, ChatTemplate, ChatTemplateError, ContentPart, MessageContent};
use serde_json::{Map, Value};

/// Llama Guard 3's hazard categories as its prompts word them: the 8B's
/// fourteen (the 1B and 11B-Vision templates list the first thirteen).
pub const DEFAULT_CATEGORIES: [(&str, &str); 14] = [
    ("S1", "Violent Crimes."),
    ("S2", "Non-Violent Crimes."),
    ("S3", "Sex Crimes."),
    ("S4", "Child Exploitation."),
    ("S5", "Defamation."),
    ("S6", "Specialized Advice."),
    ("S7", "Privacy."),
    ("S8", "Intellectual Property."),
    ("S9", "Indiscriminate Weapons."),
    ("S10", "Hate."),
    ("S11", "Self-Harm."),
    ("S12", "Sexual Content."),
    ("S13", "Elections."),
    ("S14", "Code Interpreter Abuse."),
];

/// What to classify against: a custom category list (code, description),
/// or `None` for the model's own; codes left out of the prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardPolicy {
    pub categories: Option<Vec<(String, String)>>,
    pub excluded: Vec<String>,
}

impl GuardPolicy {
    /// The categories the prompt lists, in order, exclusions removed.
    pub fn listed(&self) -> Vec<(String, String)> {
        let all: Vec<(String, String)> = match &self.categories {
            Some(c) => c.clone(),
            None => DEFAULT_CATEGORIES
                .iter()
                .map(|(c, d)| (c.to_string(), d.to_string()))
                .collect(),
        };
        all.into_iter()
            .filter(|(c, _)| !self.excluded.contains(c))
            .collect()
    }
}

/// Which turn the guard judges: the last message's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardRole {
    /// A prompt (the last message is the user's).
    User,
    /// A reply (the last message is the assistant's).
    Agent,
}

impl GuardRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardRole::User => "User",
            GuardRole::Agent => "Agent",
        }
    }
}

/// The conversation a guard sees: system messages left out (the guard
/// templates accept only alternating user and assistant turns), string
/// content turned into one text part. Fails unless the turns alternate from
/// a user turn, as the templates require.
pub fn guard_conversation(
    messages: &[ChatMessage],
) -> Result<(Vec<ChatMessage>, GuardRole), ChatTemplateError> {
    let mut out = Vec::new();
    for m in messages.iter().filter(|m| m.role != "system") {
        let want = if out.len() % 2 == 0 {
            "user"
        } else {
            "assistant"
        };
        if m.role != want {
            return Err(ChatTemplateError::Input(format!(
                "a guard judges alternating user and assistant turns from a user turn; message {} is `{}`",
                out.len() + 1,
                m.role
            )));
        }
        let parts = match &m.content {
            None => Vec::new(),
            Some(MessageContent::Text(t)) => vec![text_part(t)],
            Some(MessageContent::Parts(p)) => p.clone(),
            Some(MessageContent::Json(v)) => vec![text_part(&v.to_string())],
        };
        out.push(ChatMessage {
            content: Some(MessageContent::Parts(parts)),
            tool_calls: None,
            tool_call_id: None,
            name: None,
            extra: Map::new(),
            role: m.role.clone(),
        });
    }
    let role = match out.len() {
        0 => {
            return Err(ChatTemplateError::Input(
                "a guard needs a user or assistant message to judge".into(),
            ))
        }
        n if n % 2 == 1 => GuardRole::User,
        _ => GuardRole::Agent,
    };
    Ok((out, role))
}

fn text_part(t: &str) -> ContentPart {
    ContentPart {
        kind: "text".into(),
        text: Some(t.to_string()),
        extra: Map::new(),
    }
}

/// Whether `template` can render `policy` itself: it is a Jinja template
/// that reads the variables the policy sets.
fn template_takes(template: &ChatTemplate, policy: &GuardPolicy) -> bool {
    let Some(src) = template.source() else {
        return false;
    };
    let custom_ok = policy.categories.is_none() || src.contains("categories");
    let exclude_ok = policy.excluded.is_empty() || src.contains("excluded_category_keys");
    custom_ok && exclude_ok
}

/// The prompt for `messages` (see the module note); ends at the assistant
/// header, as the templates do.
pub fn render_guard_prompt(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    policy: &GuardPolicy,
) -> Result<String, ChatTemplateError> {
    let (conversation, role) = guard_conversation(messages)?;
    if template_takes(template, policy) {
        let mut req = RenderRequest::new(conversation).with_generation_prompt(true);
        if let Some(c) = &policy.categories {
            let map: Map<String, Value> = c
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            req = req.with_kwarg("categories", Value::Object(map));
        }
        // jinja2 reads an undefined name as empty under `in`; minijinja
        // refuses, so the default is passed explicitly.
        let excluded = policy.excluded.iter().cloned().map(Value::String).collect();
        req = req.with_kwarg("excluded_category_keys", Value::Array(excluded));
        return template.render(&req);
    }
    // Meta's Llama 3 chat format, as llama-models' ChatFormat writes one
    // user message and the assistant header (no system header: the guard
    // prompt is the whole conversation).
    let text = meta_prompt(&conversation, role, policy);
    Ok(format!(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        text.trim()
    ))
}

/// Meta's Llama Guard 3 instruction for an already checked conversation.
fn meta_prompt(conversation: &[ChatMessage], role: GuardRole, policy: &GuardPolicy) -> String {
    let categories = policy
        .listed()
        .iter()
        .map(|(c, d)| format!("{c}: {d}"))
        .collect::<Vec<_>>()
        .join("\n");
    let turns = conversation
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let who = if i % 2 == 0 { "User" } else { "Agent" };
            format!("{who}: {}", m.text().trim())
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let r = role.as_str();
    format!(
        "Task: Check if there is unsafe content in '{r}' messages in conversations according our safety policy with the below categories.\n\n\
         <BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n\
         <BEGIN CONVERSATION>\n\n{turns}\n\n<END CONVERSATION>\n\n\
         Provide your safety assessment for ONLY THE LAST {r} message in the above conversation:\n \
         - First line must read 'safe' or 'unsafe'.\n \
         - If unsafe, a second line must include a comma-separated list of violated categories."
    )
}

/// The category codes a rendered guard prompt lists, in its order: the
/// `CODE: description` lines between its category markers (a template's
/// own defaults included, which only the rendering knows).
pub fn listed_categories(prompt: &str) -> Vec<String> {
    let Some((_, rest)) = prompt.split_once("<BEGIN UNSAFE CONTENT CATEGORIES>") else {
        return Vec::new();
    };
    let body = rest
        .split_once("<END UNSAFE CONTENT CATEGORIES>")
        .map_or(rest, |(b, _)| b);
    body.lines()
        .filter_map(|l| l.split_once(": ").map(|(c, _)| c.trim().to_string()))
        .filter(|c| !c.is_empty())
        .collect()
}

/// A guard's verdict as its reply states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub unsafe_: bool,
    /// The violated category codes, in the reply's order (empty when safe).
    pub categories: Vec<String>,
}

/// How far a reply being generated has stated its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictProgress {
    /// Still a possible start of `safe` or `unsafe\n<codes>`.
    Open,
    /// The verdict (and its line of codes) is complete, or what follows
    /// it is not a verdict: more text changes nothing.
    Complete,
    /// Not a verdict.
    Invalid,
}

/// Where a reply stands: lets a caller stop decoding once the verdict is
/// known (or known to be absent) rather than at a token limit.
pub fn verdict_progress(reply: &str) -> VerdictProgress {
    let t = reply.trim_start();
    if t.starts_with("safe") {
        return VerdictProgress::Complete;
    }
    if t.is_empty() || "safe".starts_with(t) || "unsafe".starts_with(t) {
        return VerdictProgress::Open;
    }
    if let Some(rest) = t.strip_prefix("unsafe") {
        let Some(codes) = rest.strip_prefix('\n') else {
            return VerdictProgress::Complete;
        };
        let line_open = codes
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ',' || c == ' ');
        return if line_open {
            VerdictProgress::Open
        } else {
            VerdictProgress::Complete
        };
    }
    VerdictProgress::Invalid
}

/// Parses a guard's reply: `safe`, or `unsafe` then a line of
/// comma-separated codes. An unsafe verdict whose codes are all excluded
/// counts as safe (as Llama Stack decides). `None` for any other reply.
pub fn parse_verdict(reply: &str, excluded: &[String]) -> Option<Verdict> {
    let reply = reply.trim();
    if reply == "safe" {
        return Some(Verdict {
            unsafe_: false,
            categories: Vec::new(),
        });
    }
    let codes = reply.strip_prefix("unsafe\n")?;
    if codes.is_empty() || codes.contains('\n') {
        return None;
    }
    let codes: Vec<String> = codes.split(',').map(|c| c.trim().to_string()).collect();
    if codes.iter().all(|c| excluded.contains(c)) {
        return Some(Verdict {
            unsafe_: false,
            categories: Vec::new(),
        });
    }
    Some(Verdict {
        unsafe_: true,
        categories: codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_parse_as_llama_stack_parses_them() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            parse_verdict("\n\nsafe", &none).map(|v| v.unsafe_),
            Some(false)
        );
        let v = parse_verdict("unsafe\nS1,S10", &none).expect("parses");
        assert!(v.unsafe_);
        assert_eq!(v.categories, ["S1", "S10"]);
        let ex = vec!["S1".to_string(), "S10".to_string()];
        assert_eq!(
            parse_verdict("unsafe\nS1,S10", &ex).map(|v| v.unsafe_),
            Some(false)
        );
        assert_eq!(parse_verdict("unsafe", &none), None);
        assert_eq!(parse_verdict("Safe", &none), None);
        assert_eq!(parse_verdict("unsafe\nS1\nmore", &none), None);
    }

    #[test]
    fn verdict_progress_follows_the_reply_grammar() {
        use VerdictProgress::*;
        for (text, want) in [
            ("", Open),
            ("\n\n", Open),
            ("\n\nsa", Open),
            ("\n\nsafe", Complete),
            ("\n\nunsafe", Open),
            ("\n\nunsafe\n", Open),
            ("\n\nunsafe\nS1,S1", Open),
            ("\n\nunsafe\nS1\n", Complete),
            ("\n\nunsafe because", Complete),
            ("\n\nhello", Invalid),
        ] {
            assert_eq!(verdict_progress(text), want, "{text:?}");
        }
    }

    #[test]
    fn system_messages_are_left_out_and_turns_must_alternate() {
        let msgs = vec![
            ChatMessage::system("be nice"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
        ];
        let (conv, role) = guard_conversation(&msgs).expect("alternates");
        assert_eq!(conv.len(), 2);
        assert_eq!(role, GuardRole::Agent);
        let bad = vec![ChatMessage::user("a"), ChatMessage::user("b")];
        assert!(guard_conversation(&bad).is_err());
        assert!(guard_conversation(&[ChatMessage::assistant("x")]).is_err());
        assert!(guard_conversation(&[]).is_err());
    }
}
