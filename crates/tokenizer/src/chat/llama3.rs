//! The built-in Llama 3.x prompt format, for files without a template.
//!
//! It writes what Meta's Llama 3.1 template writes (system block with the
//! knowledge cutoff and date, custom tools as JSON schemas in the first user
//! message, built-in tools as `<|python_tag|>name.call(...)` ending in
//! `<|eom_id|>`, tool results in the `ipython` role), with Llama 3.2's date
//! from `strftime_now`. Without `builtin_tools` that is exactly the Llama 3.2
//! template. Where the Jinja templates raise an exception (several tool
//! calls in one message) this writes one JSON call after another,
//! separated by `; `, which the tool-call parser reads back.

use serde_json::Value;

use super::jinja::py_isspace;
use super::message::{ChatMessage, MessageContent, MessageToolCall};
use super::pyfmt::{json_dumps, JsonOptions};
use super::{ChatTemplateError, RenderRequest};

const CUTOFF: &str = "Cutting Knowledge Date: December 2023\n";
const JSON_INSTRUCTIONS: &str = "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n";

fn header(out: &mut String, role: &str) {
    out.push_str("<|start_header_id|>");
    out.push_str(role);
    out.push_str("<|end_header_id|>\n\n");
}

fn strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str(content)` of a message content, as `| trim` sees it.
fn content_str(m: &ChatMessage) -> Result<String, ChatTemplateError> {
    Ok(match &m.content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t.clone(),
        // Parts are joined rather than printed as a Python list, which is
        // what the Jinja templates would do and never what a caller wants.
        Some(MessageContent::Parts(_)) => m.text(),
        Some(MessageContent::Json(v)) => super::pyfmt::py_string(&super::pyfmt::to_value(v)),
    })
}

fn tojson(v: &Value, indent: Option<&str>) -> Result<String, ChatTemplateError> {
    let opts = JsonOptions {
        indent: indent.map(str::to_string),
        item_separator: if indent.is_some() { "," } else { ", " }.into(),
        ..JsonOptions::default()
    };
    json_dumps(&super::pyfmt::to_value(v), &opts)
        .map_err(|e| ChatTemplateError::Input(e.to_string()))
}

fn write_tools(out: &mut String, tools: &[Value]) -> Result<(), ChatTemplateError> {
    out.push_str(JSON_INSTRUCTIONS);
    for t in tools {
        out.push_str(&tojson(t, Some("    "))?);
        out.push_str("\n\n");
    }
    Ok(())
}

fn write_call(
    out: &mut String,
    call: &MessageToolCall,
    builtin: Option<&[String]>,
) -> Result<(), ChatTemplateError> {
    let f = &call.function;
    if builtin.is_some_and(|b| b.contains(&f.name)) {
        out.push_str("<|python_tag|>");
        out.push_str(&f.name);
        out.push_str(".call(");
        if let Value::Object(args) = &f.arguments {
            for (i, (k, v)) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => super::pyfmt::py_string(&super::pyfmt::to_value(other)),
                };
                out.push_str(&format!("{k}=\"{v}\""));
            }
        }
        out.push(')');
    } else {
        out.push_str("{\"name\": \"");
        out.push_str(&f.name);
        out.push_str("\", \"parameters\": ");
        out.push_str(&tojson(&f.arguments, None)?);
        out.push('}');
    }
    Ok(())
}

fn kwarg<'a>(req: &'a RenderRequest, key: &str) -> Option<&'a Value> {
    req.kwargs.get(key).filter(|v| !v.is_null())
}

pub(crate) fn render(req: &RenderRequest, bos: &str) -> Result<String, ChatTemplateError> {
    let bos = match req.kwargs.get("bos_token") {
        Some(Value::String(s)) => s.as_str(),
        _ => bos,
    };
    let custom_tools = match kwarg(req, "custom_tools") {
        Some(Value::Array(t)) => Some(t.as_slice()),
        Some(_) => {
            return Err(ChatTemplateError::Input(
                "custom_tools must be a list".into(),
            ))
        }
        None => None,
    };
    let tools = custom_tools.or(req.tools.as_deref());
    let tools_in_user =
        kwarg(req, "tools_in_user_message").is_none_or(|v| v.as_bool() != Some(false));
    let date = match kwarg(req, "date_string") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => req.clock.now().strftime("%d %b %Y"),
    };
    let builtin: Option<Vec<String>> = match kwarg(req, "builtin_tools") {
        Some(Value::Array(names)) => Some(
            names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ChatTemplateError::Input("builtin_tools must be a list of names".into())
                })?,
        ),
        Some(_) => {
            return Err(ChatTemplateError::Input(
                "builtin_tools must be a list of names".into(),
            ))
        }
        None => None,
    };

    let mut messages: &[ChatMessage] = &req.messages;
    let mut system = String::new();
    if let Some(first) = messages.first().filter(|m| m.role == "system") {
        system = strip(&content_str(first)?).to_string();
        messages = &messages[1..];
    }

    let mut out = String::from(bos);
    header(&mut out, "system");
    if builtin.is_some() || tools.is_some() {
        out.push_str("Environment: ipython\n");
    }
    if let Some(names) = &builtin {
        let shown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "code_interpreter")
            .collect();
        out.push_str("Tools: ");
        out.push_str(&shown.join(", "));
        out.push_str("\n\n");
    }
    out.push_str(CUTOFF);
    out.push_str("Today Date: ");
    out.push_str(&date);
    out.push_str("\n\n");
    if let (Some(tools), false) = (tools, tools_in_user) {
        out.push_str("You have access to the following functions. To call a function, please respond with JSON for a function call.");
        write_tools(&mut out, tools)?;
    }
    out.push_str(&system);
    out.push_str("<|eot_id|>");

    if let (Some(tools), true) = (tools, tools_in_user) {
        let Some(first) = messages.first() else {
            return Err(ChatTemplateError::Raised(
                "Cannot put tools in the first user message when there's no first user message!"
                    .into(),
            ));
        };
        let first_text = strip(&content_str(first)?).to_string();
        messages = &messages[1..];
        header(&mut out, "user");
        out.push_str("Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n");
        write_tools(&mut out, tools)?;
        out.push_str(&first_text);
        out.push_str("<|eot_id|>");
    }

    for m in messages {
        let is_tool_result = m.role == "tool" || m.role == "ipython";
        match (&m.tool_calls, is_tool_result) {
            (Some(calls), _) if !calls.is_empty() => {
                header(&mut out, "assistant");
                for (i, call) in calls.iter().enumerate() {
                    if i > 0 {
                        out.push_str("; ");
                    }
                    write_call(&mut out, call, builtin.as_deref())?;
                }
                out.push_str(if builtin.is_some() {
                    "<|eom_id|>"
                } else {
                    "<|eot_id|>"
                });
            }
            (_, true) => {
                header(&mut out, "ipython");
                // The templates test `content is mapping or content is
                // iterable`, which is true for strings: results go in as JSON.
                match &m.content {
                    None => {}
                    Some(MessageContent::Text(t)) => {
                        out.push_str(&tojson(&Value::String(t.clone()), None)?)
                    }
                    Some(MessageContent::Parts(_)) => {
                        out.push_str(&tojson(&Value::String(m.text()), None)?)
                    }
                    Some(MessageContent::Json(v)) => match v {
                        Value::Object(_) | Value::Array(_) | Value::String(_) => {
                            out.push_str(&tojson(v, None)?)
                        }
                        other => out.push_str(&content_str(&ChatMessage {
                            content: Some(MessageContent::Json(other.clone())),
                            ..m.clone()
                        })?),
                    },
                }
                out.push_str("<|eot_id|>");
            }
            _ => {
                header(&mut out, &m.role);
                out.push_str(strip(&content_str(m)?));
                out.push_str("<|eot_id|>");
            }
        }
    }
    if req.add_generation_prompt {
        header(&mut out, "assistant");
    }
    Ok(out)
}
