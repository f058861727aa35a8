//! Chat messages as templates see them: the dicts that Hugging Face's
//! `apply_chat_template` and OpenAI-style requests pass around.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One message of a conversation.
///
/// It serializes to the dict a template receives: only fields that are set
/// appear, so a template's `'tool_calls' in message` is true only for
/// messages that carry tool calls. Fields this type does not name are kept
/// in `extra`, in their original order. A `"content": null` (as OpenAI
/// clients send with tool calls) reads as no content: the key is absent for
/// the template, where Python would see it set to `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` or `ipython` (any string is
    /// passed through).
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<MessageToolCall>>,
    /// Which call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message's content: text, a list of typed parts (OpenAI's
/// `[{"type": "text", "text": ...}]`), or structured data (a tool result
/// given as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
    Json(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool call inside an assistant message, in OpenAI's shape:
/// `{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}`.
///
/// `arguments` is kept as given: Hugging Face templates expect an object,
/// OpenAI clients send a JSON string, and templates print each differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

impl ChatMessage {
    /// A message with text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(content.into())),
            tool_calls: None,
            tool_call_id: None,
            name: None,
            extra: Map::new(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// An assistant message that calls tools (no content).
    pub fn tool_calls(calls: Vec<MessageToolCall>) -> Self {
        ChatMessage {
            content: None,
            tool_calls: Some(calls),
            ..Self::new("assistant", "")
        }
    }

    /// A tool result, answering the call `call_id` when given.
    pub fn tool_result(content: impl Into<String>, call_id: Option<String>) -> Self {
        ChatMessage {
            tool_call_id: call_id,
            ..Self::new("tool", content)
        }
    }

    /// The message's text: the content string, or the text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
            Some(MessageContent::Json(v)) => v.to_string(),
        }
    }
}

impl MessageToolCall {
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        MessageToolCall {
            id: None,
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}
