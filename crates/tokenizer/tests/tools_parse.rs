//! Tool-call parsing for Llama 3.x replies: every form the model writes,
//! malformed and partial calls (kept as text), and the streaming hold-back.

use edgellama_tokenizer::chat::tools::{
    may_be_tool_call, parse_json_calls, parse_pythonic_calls, parse_reply, parse_reply_with,
    streamable_prefix_len, ParsedReply, ToolCall, ToolCallError, ToolParseOptions,
    CODE_INTERPRETER,
};
use serde_json::{json, Value};

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        name: name.into(),
        arguments,
    }
}

fn calls_only(calls: Vec<ToolCall>) -> ParsedReply {
    ParsedReply {
        content: String::new(),
        tool_calls: calls,
    }
}

fn text_only(text: &str) -> ParsedReply {
    ParsedReply {
        content: text.into(),
        tool_calls: vec![],
    }
}

/// Pythonic calls and what Python makes of them. The expected JSON is
/// CPython 3.11's reading of each input:
/// `[{"name": ast.unparse(c.func), "arguments": {k.arg: ast.literal_eval(k.value)
/// for k in c.keywords}} for c in ast.parse(src, mode="eval").body.elts]`.
const PYTHONIC: &[(&str, &str)] = &[
    (
        r#"[get_weather(city='Paris'), get_time(tz="UTC")]"#,
        r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"tz": "UTC"}}]"#,
    ),
    (
        r#"[f(s='it\'s', d="say \"hi\"", n='a\nb\tc\\d', u='\u00e9\x41\U0001F30D', o='\101')]"#,
        r#"[{"name": "f", "arguments": {"s": "it's", "d": "say \"hi\"", "n": "a\nb\tc\\d", "u": "éA🌍", "o": "A"}}]"#,
    ),
    (
        "[f(i=42, neg=-7, fl=3.25, e=1e-3, big=12345678901234, t=True, fa=False, no=None)]",
        r#"[{"name": "f", "arguments": {"i": 42, "neg": -7, "fl": 3.25, "e": 0.001, "big": 12345678901234, "t": true, "fa": false, "no": null}}]"#,
    ),
    (
        r#"[f(l=[1, 'two', [3.0, None]], d={'a': 1, "b": [True]}, tup=(1, 2), empty=[], ed={})]"#,
        r#"[{"name": "f", "arguments": {"l": [1, "two", [3.0, null]], "d": {"a": 1, "b": [true]}, "tup": [1, 2], "empty": [], "ed": {}}}]"#,
    ),
    (
        r#"[search(query='Zürich 東京 🌍', lang="हिन्दी")]"#,
        r#"[{"name": "search", "arguments": {"query": "Zürich 東京 🌍", "lang": "हिन्दी"}}]"#,
    ),
    (
        r#"[f(raw=r'C:\new\table', cat='ab' "cd")]"#,
        r#"[{"name": "f", "arguments": {"raw": "C:\\new\\table", "cat": "abcd"}}]"#,
    ),
    ("[f()]", r#"[{"name": "f", "arguments": {}}]"#),
    (
        "[ns.tool(x=1,), g(y = 'z' ,)]",
        r#"[{"name": "ns.tool", "arguments": {"x": 1}}, {"name": "g", "arguments": {"y": "z"}}]"#,
    ),
    (
        "[f(s='''multi\nline''')]",
        r#"[{"name": "f", "arguments": {"s": "multi\nline"}}]"#,
    ),
    (
        "[f(x=1_000, y=0.5e2, z=+3)]",
        r#"[{"name": "f", "arguments": {"x": 1000, "y": 50.0, "z": 3}}]"#,
    ),
];

#[test]
fn pythonic_calls_match_python() {
    for (src, want) in PYTHONIC {
        let want: Vec<ToolCall> = serde_json::from_str(want).unwrap();
        assert_eq!(parse_pythonic_calls(src).unwrap(), want, "{src}");
        assert_eq!(parse_reply(src), calls_only(want.clone()), "{src}");
        // With the end-of-turn marker the model emits.
        assert_eq!(
            parse_reply(&format!("{src}<|eot_id|>")),
            calls_only(want),
            "{src}"
        );
    }
}

#[test]
fn json_calls_in_every_shape() {
    let f = || call("get_weather", json!({"city": "Paris", "days": 3}));
    let g = || call("get_time", json!({"tz": "UTC"}));
    let single = r#"{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}"#;
    assert_eq!(parse_reply(single), calls_only(vec![f()]));
    let arguments = r#"{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}"#;
    assert_eq!(parse_reply(arguments), calls_only(vec![f()]));
    let stringly = r#"{"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 3}"}"#;
    assert_eq!(parse_reply(stringly), calls_only(vec![f()]));
    let typed = r#"{"type": "function", "name": "get_weather", "parameters": {"city": "Paris", "days": 3}}"#;
    assert_eq!(parse_reply(typed), calls_only(vec![f()]));
    let openai = r#"{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}"#;
    assert_eq!(parse_reply(openai), calls_only(vec![f()]));
    let second = r#"{"name": "get_time", "parameters": {"tz": "UTC"}}"#;
    for sep in ["; ", ";", "\n", "\n\n", " ;\n", " "] {
        let two = format!("{single}{sep}{second}");
        assert_eq!(parse_reply(&two), calls_only(vec![f(), g()]), "{sep:?}");
    }
    let list = format!("[{single}, {second}]");
    assert_eq!(parse_reply(&list), calls_only(vec![f(), g()]));
    assert_eq!(
        parse_json_calls(&format!("  {list}\n")).unwrap(),
        vec![f(), g()]
    );
    let empty_args = r#"{"name": "get_time", "parameters": {}}"#;
    assert_eq!(
        parse_reply(empty_args),
        calls_only(vec![call("get_time", json!({}))])
    );
    let null_args = r#"{"name": "get_time", "parameters": null}"#;
    assert_eq!(
        parse_reply(null_args),
        calls_only(vec![call("get_time", json!({}))])
    );
    let unicode = r#"{"name": "translate", "parameters": {"text": "Grüße, 世界 🌍", "to": "ไทย"}}"#;
    assert_eq!(
        parse_reply(unicode),
        calls_only(vec![call(
            "translate",
            json!({"text": "Grüße, 世界 🌍", "to": "ไทย"})
        )])
    );
}

#[test]
fn python_tag_calls() {
    let code = "<|python_tag|>import math\nprint(math.sqrt(2))<|eom_id|>";
    assert_eq!(
        parse_reply(code),
        calls_only(vec![call(
            CODE_INTERPRETER,
            json!({"code": "import math\nprint(math.sqrt(2))"})
        )])
    );
    let builtin =
        r#"<|python_tag|>brave_search.call(query="Tour de France 2024 winner")<|eom_id|>"#;
    assert_eq!(
        parse_reply(builtin),
        calls_only(vec![call(
            "brave_search",
            json!({"query": "Tour de France 2024 winner"})
        )])
    );
    let json_call =
        r#"<|python_tag|>{"name": "get_time", "parameters": {"tz": "Asia/Bangkok"}}<|eot_id|>"#;
    assert_eq!(
        parse_reply(json_call),
        calls_only(vec![call("get_time", json!({"tz": "Asia/Bangkok"}))])
    );
    // No end marker: the reply was cut by max tokens; the code is still a call.
    let open = "<|python_tag|>print(1)";
    assert_eq!(
        parse_reply(open),
        calls_only(vec![call(CODE_INTERPRETER, json!({"code": "print(1)"}))])
    );
    // Text before the tag stays content.
    let mixed = "Let me compute that.\n<|python_tag|>print(6*7)<|eom_id|>";
    assert_eq!(
        parse_reply(mixed),
        ParsedReply {
            content: "Let me compute that.".into(),
            tool_calls: vec![call(CODE_INTERPRETER, json!({"code": "print(6*7)"}))],
        }
    );
    // An empty tag is no call; the text is kept.
    assert_eq!(
        parse_reply("Hmm <|python_tag|><|eom_id|>"),
        text_only("Hmm <|python_tag|>")
    );
}

#[test]
fn text_around_calls_is_content() {
    let reply = "Sure, checking the weather.\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\nOne moment.";
    assert_eq!(
        parse_reply(reply),
        ParsedReply {
            content: "Sure, checking the weather.\nOne moment.".into(),
            tool_calls: vec![call("get_weather", json!({"city": "Oslo"}))],
        }
    );
    let reply = "I will call [get_time(tz='UTC')] now";
    assert_eq!(
        parse_reply(reply),
        ParsedReply {
            content: "I will call\nnow".into(),
            tool_calls: vec![call("get_time", json!({"tz": "UTC"}))],
        }
    );
    // A second call that breaks off stays text after the first.
    let reply = r#"{"name": "a", "parameters": {}}; {"name": "b", "param"#;
    assert_eq!(
        parse_reply(reply),
        ParsedReply {
            content: r#"; {"name": "b", "param"#.into(),
            tool_calls: vec![call("a", json!({}))],
        }
    );
}

#[test]
fn malformed_calls_are_kept_as_text() {
    let cases = [
        // truncated JSON
        r#"{"name": "get_weather", "parameters": {"city": "Par"#,
        r#"[{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
        // unbalanced brackets
        "[get_weather(city='Paris']",
        "[get_weather(city='Paris')",
        "get_weather(city='Paris'",
        // unterminated string, bad escape
        "[f(a='abc)]",
        r"[f(a='\x4')]",
        // positional arguments, expressions, calls as values
        "[f(1, 2)]",
        "[f(a=1+2)]",
        "[f(a=g(1))]",
        "[f(a=1, a=2)]",
        // JSON that is not a call
        r#"{"name": "Bob", "age": 31}"#,
        r#"{"name": 5, "parameters": {}}"#,
        r#"{"name": "f", "parameters": [1, 2]}"#,
        r#"{"name": "f", "parameters": {}, "arguments": {}}"#,
        r#"{"type": "image", "name": "f", "parameters": {}}"#,
        r#"{"name": "get_time"}"#,
        "[]",
        "[1, 2, 3]",
        // other syntaxes
        "<tool_call>{\"name\": \"f\"}</tool_call>",
        "<function=f>{}</function>",
        "f(x)",
        "",
        "   ",
        "Just a normal answer: use print(x) and {braces} [brackets].",
    ];
    for reply in cases {
        let parsed = parse_reply(reply);
        assert_eq!(parsed, text_only(reply), "{reply:?}");
    }
}

#[test]
fn prose_with_function_syntax_is_not_a_call() {
    for reply in [
        "Call get_weather(city='Paris') to know.",
        "The answer is {\"name\": \"x\", \"parameters\": {}} in JSON",
        "Write f(a=1) in Python.",
    ] {
        let parsed = parse_reply(reply);
        if reply.starts_with("The answer") {
            // A complete JSON call inside prose is still taken (llama.cpp does
            // the same); restrict names with known_tools to avoid it.
            assert_eq!(parsed.tool_calls, vec![call("x", json!({}))]);
            let opts = ToolParseOptions {
                known_tools: Some(vec!["get_weather".into()]),
            };
            assert_eq!(parse_reply_with(reply, &opts), text_only(reply));
        } else {
            assert_eq!(parsed, text_only(reply), "{reply}");
        }
    }
}

#[test]
fn known_tools_filter() {
    let opts = ToolParseOptions {
        known_tools: Some(vec!["get_weather".into()]),
    };
    let good = r#"{"name": "get_weather", "parameters": {"city": "Rome"}}"#;
    assert_eq!(
        parse_reply_with(good, &opts),
        calls_only(vec![call("get_weather", json!({"city": "Rome"}))])
    );
    let unknown = r#"{"name": "launch_missiles", "parameters": {}}"#;
    assert_eq!(parse_reply_with(unknown, &opts), text_only(unknown));
    let pythonic = "[launch_missiles()]";
    assert_eq!(parse_reply_with(pythonic, &opts), text_only(pythonic));
    // Code after <|python_tag|> always goes to the code interpreter.
    let code = "<|python_tag|>print(1)<|eom_id|>";
    assert_eq!(parse_reply_with(code, &opts).tool_calls.len(), 1);
}

#[test]
fn typed_errors_name_the_place() {
    match parse_pythonic_calls("[f(a=1, 2)]") {
        Err(ToolCallError::Syntax { at, .. }) => assert_eq!(at, 8),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_pythonic_calls("[f()] extra"),
        Err(ToolCallError::Syntax { at: 6, .. })
    ));
    let deep = format!("[f(a={}1{})]", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        parse_pythonic_calls(&deep),
        Err(ToolCallError::TooDeep { .. })
    ));
    assert_eq!(parse_reply(&deep), text_only(&deep));
    let deep_json = format!(
        r#"{{"name": "f", "parameters": {}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(parse_reply(&deep_json), text_only(&deep_json));
    assert!(parse_json_calls("{\"name\": \"f\"} tail").is_err());
}

/// Replies whose calls must never reach a streaming client as text.
const CALL_REPLIES: &[&str] = &[
    r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
    r#"  {"type": "function", "function": {"name": "f", "arguments": {}}}"#,
    r#"[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {"x": [1, {"y": "}"}]}}]"#,
    "[get_weather(city='Paris'), get_time(tz=\"UTC\")]",
    "get_weather(city='Paris')",
    "<|python_tag|>print('hi')<|eom_id|>",
    "Let me check. <|python_tag|>brave_search.call(query=\"x\")<|eom_id|>",
    "Checking: {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
];

#[test]
fn streaming_never_leaks_a_call() {
    for reply in CALL_REPLIES {
        let parsed = parse_reply(reply);
        assert!(!parsed.tool_calls.is_empty(), "{reply}");
        let mut sent = 0;
        for (end, _) in reply.char_indices().skip(1).chain([(reply.len(), ' ')]) {
            let prefix = &reply[..end];
            let n = streamable_prefix_len(prefix);
            assert!(n <= prefix.len() && prefix.is_char_boundary(n));
            // What was sent is never taken back.
            assert!(n >= sent, "{reply:?}: {n} after {sent} at {end}");
            sent = n;
        }
        // Only the text before the call was streamed.
        assert!(
            parsed.content.starts_with(reply[..sent].trim()),
            "{reply:?}: streamed {:?}",
            &reply[..sent]
        );
        assert!(may_be_tool_call(reply), "{reply}");
    }
}

#[test]
fn streaming_releases_plain_text() {
    let plain = "Paris is the capital of France. It has 2.1 million people [citation needed], and {curly} things.";
    let mut sent = 0;
    for (end, _) in plain.char_indices().skip(1) {
        let n = streamable_prefix_len(&plain[..end]);
        assert!(n >= sent);
        sent = n;
    }
    assert_eq!(streamable_prefix_len(plain), plain.len());
    assert!(!may_be_tool_call(plain));
    // Only a possible tag at the end is held.
    assert_eq!(streamable_prefix_len("Hello <|pyt"), 6);
    assert_eq!(streamable_prefix_len("Hello <|eot"), 11);
    // A call after text: the text goes out, the call is held.
    let t = "Sure! {\"na";
    assert_eq!(streamable_prefix_len(t), 6);
    assert_eq!(streamable_prefix_len("Sure! {\"x\": 1}"), 14);
}

/// xorshift64*: a fixed stream of random inputs without a dependency.
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
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\"",
    "'",
    "\\",
    ",",
    ";",
    ":",
    "=",
    "\n",
    " ",
    "name",
    "\"name\"",
    "\"parameters\"",
    "\"arguments\"",
    "f",
    "get_weather",
    "city",
    "1",
    "-2.5e3",
    "True",
    "None",
    "<|python_tag|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|pyt",
    ".call",
    "é",
    "🌍",
    "\\u00",
    "\\x",
    "'''",
    "r'",
    "_",
    "0x",
];

#[test]
fn random_replies_never_panic_and_keep_text() {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut with_calls = 0;
    for _ in 0..20_000 {
        let n = rng.below(30);
        let reply: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
        let parsed = parse_reply(&reply);
        if parsed.tool_calls.is_empty() {
            // Nothing but end markers and surrounding space may be dropped.
            let trimmed = reply.trim_end();
            assert!(
                trimmed.starts_with(parsed.content.trim_end()),
                "{reply:?} -> {parsed:?}"
            );
        } else {
            with_calls += 1;
        }
        let k = streamable_prefix_len(&reply);
        assert!(reply.is_char_boundary(k));
        let _ = parse_pythonic_calls(&reply);
        let _ = parse_json_calls(&reply);
    }
    assert!(with_calls > 10, "the generator must reach the call parsers");
}
