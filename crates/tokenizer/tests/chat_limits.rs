//! Hostile and malformed templates end quickly in a typed error, never a
//! hang, a crash or unbounded memory; random templates and conversations
//! never panic; a long real conversation stays within the budget.

use std::time::{Duration, Instant};

use edgellama_tokenizer::chat::{ChatMessage, ChatTemplate, ChatTemplateError, RenderRequest};

fn render(src: &str) -> Result<String, ChatTemplateError> {
    let t = ChatTemplate::new(src)?;
    t.render(&RenderRequest::new(vec![ChatMessage::user("hi")]))
}

/// Renders `src` and returns its error, failing when it succeeds or takes
/// more than a few seconds.
fn must_fail(src: &str) -> ChatTemplateError {
    let start = Instant::now();
    let r = render(src);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "{src}: took {took:?}");
    match r {
        Ok(out) => panic!("{src}: rendered {} bytes", out.len()),
        Err(e) => e,
    }
}

#[test]
fn endless_loops_run_out_of_fuel() {
    for src in [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}{% endfor %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    ] {
        assert!(matches!(must_fail(src), ChatTemplateError::Limits(_)), "{src}");
    }
    assert!(matches!(
        must_fail("{% for i in range(1000000000) %}x{% endfor %}"),
        ChatTemplateError::Render(_) | ChatTemplateError::Limits(_)
    ));
}

#[test]
fn memory_bombs_run_out_of_fuel() {
    for src in [
        "{{ 'x' * 10000000000 }}",
        "{{ ('x' * 1000000) * 100000 }}",
        "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    ] {
        assert!(matches!(must_fail(src), ChatTemplateError::Limits(_)), "{src}");
    }
}

#[test]
fn unbounded_recursion_is_stopped() {
    let e = must_fail("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
    assert!(matches!(e, ChatTemplateError::Limits(_)), "{e:?}");
    // Nesting in the source is refused by the parser.
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(matches!(must_fail(&deep), ChatTemplateError::Syntax(_)));
    let deep = format!(
        "{}{}",
        "{% if true %}".repeat(10_000),
        "{% endif %}".repeat(10_000)
    );
    assert!(matches!(must_fail(&deep), ChatTemplateError::Syntax(_)));
}

#[test]
fn syntax_errors_and_exceptions_are_typed() {
    for src in [
        "{% if %}",
        "{{ ",
        "{% for x in %}{% endfor %}",
        "{% endif %}",
        "{{ 'a' }",
    ] {
        assert!(
            matches!(must_fail(src), ChatTemplateError::Syntax(_)),
            "{src}"
        );
    }
    match must_fail("{{ raise_exception('only user and assistant roles') }}") {
        ChatTemplateError::Raised(m) => assert_eq!(m, "only user and assistant roles"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        must_fail("{{ messages[0].nothing.deeper }}"),
        ChatTemplateError::Render(_)
    ));
    assert!(matches!(
        must_fail("{{ messages | tojson(indent=[1]) }}"),
        ChatTemplateError::Render(_)
    ));
}

/// A long conversation with tools renders within the budget, and fast.
#[test]
fn long_conversation_fits_the_budget() {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat/llama3.2.jinja"),
    )
    .unwrap();
    let t = ChatTemplate::new(src).unwrap();
    let mut messages = vec![ChatMessage::system("You are terse.")];
    for i in 0..2000 {
        messages.push(ChatMessage::user(format!(
            "Question {i}: what is {i} squared?"
        )));
        messages.push(ChatMessage::assistant(format!("{}", i * i)));
    }
    let tools: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"type": "function", "function": {"name": format!("tool_{i}"), "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}))
        .collect();
    let req = RenderRequest::new(messages)
        .with_tools(tools)
        .with_generation_prompt(true);
    let start = Instant::now();
    let out = t.render(&req).unwrap();
    let took = start.elapsed();
    assert!(out.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    assert_eq!(out.matches("<|eot_id|>").count(), 4001);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// xorshift64*: a fixed, dependency-free stream for the random tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "-",
    "+",
    " ",
    "\n",
    "if ",
    "for ",
    "in ",
    "endif",
    "endfor",
    "else",
    "elif",
    "set ",
    "macro",
    "endmacro",
    "call",
    "messages",
    "message",
    "[0]",
    "['role']",
    ".content",
    "|tojson",
    "|trim",
    "|length",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    "~",
    "+",
    "*",
    "loop.index",
    "range(",
    "99999",
    "x",
    "=",
    "==",
    "not ",
    "is defined",
    "none",
    "True",
    "raise_exception(",
    "strftime_now(",
    "namespace(",
    ".split(",
    ".strip()",
    ",",
    ":",
    "é",
    "🌍",
    "\\",
    "{",
    "}",
    "break",
    "continue",
    "tools",
    "bos_token",
    "add_generation_prompt",
];

fn random_text(rng: &mut Rng, max: usize) -> String {
    let n = rng.below(max);
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

#[test]
fn random_templates_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rendered = 0;
    for _ in 0..3000 {
        let src = random_text(&mut rng, 24);
        let start = Instant::now();
        if let Ok(t) = ChatTemplate::new(src.clone()) {
            let req = RenderRequest::new(vec![
                ChatMessage::system(random_text(&mut rng, 6)),
                ChatMessage::user(random_text(&mut rng, 6)),
            ])
            .with_generation_prompt(rng.below(2) == 0);
            if t.render(&req).is_ok() {
                rendered += 1;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{src:?}");
    }
    // The generator must reach the renderer, not only the parser.
    assert!(rendered > 100, "only {rendered} random templates rendered");
}

#[test]
fn random_conversations_never_panic() {
    let templates = [
        ChatTemplate::builtin_llama3(),
        ChatTemplate::new(
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/golden/chat/llama3.2.jinja"),
            )
            .unwrap(),
        )
        .unwrap(),
    ];
    let mut rng = Rng(42);
    let roles = [
        "system",
        "user",
        "assistant",
        "tool",
        "ipython",
        "",
        "weird role",
    ];
    for _ in 0..500 {
        let mut messages = Vec::new();
        for _ in 0..rng.below(6) {
            let json = match rng.below(4) {
                0 => {
                    serde_json::json!({"role": roles[rng.below(roles.len())], "content": random_text(&mut rng, 8)})
                }
                1 => {
                    serde_json::json!({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": random_text(&mut rng, 3), "arguments": {"a": random_text(&mut rng, 3)}}}]})
                }
                2 => serde_json::json!({"role": "tool", "content": {"k": [1, 2.5, null]}}),
                _ => {
                    serde_json::json!({"role": "user", "content": [{"type": "text", "text": random_text(&mut rng, 4)}]})
                }
            };
            messages.push(serde_json::from_value::<ChatMessage>(json).unwrap());
        }
        let mut req = RenderRequest::new(messages).with_generation_prompt(rng.below(2) == 0);
        if rng.below(2) == 0 {
            req = req.with_tools(vec![serde_json::json!({"name": random_text(&mut rng, 3)})]);
        }
        for t in &templates {
            let _ = t.render(&req);
        }
    }
}
