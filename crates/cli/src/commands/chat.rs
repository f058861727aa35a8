//! `edgellama chat`: an interactive conversation in the terminal.
//!
//! Each turn renders the whole conversation with the chat template, keeps
//! the longest token prefix the KV cache already holds, and evaluates only
//! the rest, so the history is not processed again.

use crate::commands::run::{check_logit_bias, max_tokens, SamplingArgs};
use crate::{images, load, spec};
use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_engine::spec::{Drafter, SpecParams};
use edgellama_engine::{
    generate_after, generate_speculative, FinishReason, GenerateParams, GenerationStats,
};
use edgellama_gguf::GgufFile;
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_models::{CausalLm, PreparedImage, SeqState};
use edgellama_tokenizer::chat::{
    ChatMessage, ChatTemplate, ContentPart, MessageContent, RenderRequest,
};
use edgellama_tokenizer::Tokenizer;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: load::ModelArgs,
    /// A system message that opens the conversation.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Context size in tokens (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    #[command(flatten)]
    pub threads: load::ThreadsArgs,
    #[command(flatten)]
    pub kv: load::KvArgs,
    /// Most tokens in one reply (-1: until the model ends its turn).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// After each reply, print to stderr how many prompt tokens were
    /// evaluated and reused, and the generation speed.
    #[arg(long = "stats")]
    pub stats: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: spec::SpecArgs,
}

/// The model's chat template, or `source` in its place; the built-in
/// Llama 3.x format when the file has none.
pub fn load_template(file: &GgufFile, path: &Path, source: Option<&str>) -> Result<ChatTemplate> {
    match source {
        Some(src) => ChatTemplate::from_gguf_with_source(file, src),
        None => ChatTemplate::from_gguf(file),
    }
    .with_context(|| format!("cannot load the chat template of {}", path.display()))
}

/// Drops the oldest turn: the first message after any leading system
/// messages and every message up to the next user message. Returns false
/// when only system messages are left.
pub fn drop_oldest_turn(messages: &mut Vec<ChatMessage>) -> bool {
    let Some(start) = messages.iter().position(|m| m.role != "system") else {
        return false;
    };
    let end = messages
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, m)| m.role == "user")
        .map_or(messages.len(), |(i, _)| i);
    messages.drain(start..end);
    true
}

/// Reads a conversation saved by `/save` (or any OpenAI-style list of
/// messages, bare or as `{"messages": [...]}`).
pub fn read_conversation(path: &Path) -> Result<Vec<ChatMessage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let list = match doc {
        Value::Array(_) => doc,
        Value::Object(mut o) => match o.remove("messages") {
            Some(m @ Value::Array(_)) => m,
            _ => bail!(
                "{}: expected a list of messages or an object with \"messages\"",
                path.display()
            ),
        },
        _ => bail!(
            "{}: expected a list of messages or an object with \"messages\"",
            path.display()
        ),
    };
    serde_json::from_value(list).with_context(|| {
        format!(
            "{}: not a list of chat messages ({{\"role\": ..., \"content\": ...}})",
            path.display()
        )
    })
}

pub fn write_conversation(path: &Path, messages: &[ChatMessage]) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(messages).context("cannot encode the conversation")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// What one turn did.
#[derive(Debug)]
pub struct Turn {
    /// Prompt tokens found in the KV cache and not evaluated again.
    pub reused: usize,
    /// Prompt tokens evaluated for this turn.
    pub evaluated: usize,
    pub stats: GenerationStats,
}

/// A conversation and the KV cache that follows it.
pub struct ChatSession<'m> {
    model: &'m dyn CausalLm,
    tok: &'m Tokenizer,
    template: &'m ChatTemplate,
    state: SeqState,
    /// The tokens the KV cache holds, in order (`state.n_past` of them).
    cached: Vec<u32>,
    messages: Vec<ChatMessage>,
    system: Option<String>,
    params: GenerateParams,
    /// The images of the conversation's image tokens, in order.
    images: Vec<Arc<PreparedImage>>,
    /// Images `/image` queued for the next message.
    queued: Vec<Arc<PreparedImage>>,
    /// Speculative decoding, when asked for.
    drafter: Option<(Box<dyn Drafter>, SpecParams)>,
}

impl<'m> ChatSession<'m> {
    pub fn new(
        model: &'m dyn CausalLm,
        tok: &'m Tokenizer,
        template: &'m ChatTemplate,
        state: SeqState,
        system: Option<String>,
        params: GenerateParams,
    ) -> Result<Self> {
        let mut s = ChatSession {
            model,
            tok,
            template,
            state,
            cached: Vec::new(),
            messages: Vec::new(),
            system,
            params,
            images: Vec::new(),
            queued: Vec::new(),
            drafter: None,
        };
        s.clear();
        Ok(s)
    }

    /// Replies are generated with speculative decoding by `drafter`.
    pub fn set_drafter(&mut self, drafter: Box<dyn Drafter>, params: SpecParams) {
        self.drafter = Some((drafter, params));
    }

    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Starts over with only the system message. The cache is kept: the
    /// next turn reuses whatever prefix still matches.
    pub fn clear(&mut self) {
        self.messages = self.system.iter().map(ChatMessage::system).collect();
        self.images.clear();
        self.queued.clear();
    }

    /// Replaces the conversation. Saved conversations hold no image data:
    /// one that names images cannot be continued.
    pub fn set_messages(&mut self, messages: Vec<ChatMessage>) {
        self.messages = messages;
        self.images.clear();
    }

    /// Prepares an image file for the next message.
    pub fn queue_image(&mut self, bytes: &[u8]) -> Result<usize> {
        let cfg = images::preprocess_config(self.model.info())?;
        let img = preprocess::prepare(bytes, &ImageLimits::default(), cfg)?;
        self.queued.push(Arc::new(img));
        Ok(self.queued.len())
    }

    /// The user message `text`, after the queued images: as content parts
    /// when there are images (vision templates render each image part as
    /// the image token, and leave out their system header for images, as
    /// transformers' processor has them do), as a string otherwise.
    fn user_message(&self, text: &str) -> ChatMessage {
        if self.queued.is_empty() {
            return ChatMessage::user(text);
        }
        let part = |kind: &str, text: Option<&str>| ContentPart {
            kind: kind.into(),
            text: text.map(str::to_string),
            extra: Default::default(),
        };
        let mut parts: Vec<ContentPart> = self.queued.iter().map(|_| part("image", None)).collect();
        parts.push(part("text", Some(text)));
        let mut m = ChatMessage::user("");
        m.content = Some(MessageContent::Parts(parts));
        m
    }

    /// Image parts in the conversation's messages.
    fn images_in_messages(&self) -> usize {
        self.messages
            .iter()
            .map(|m| match &m.content {
                Some(MessageContent::Parts(p)) => p.iter().filter(|p| p.kind == "image").count(),
                _ => 0,
            })
            .sum()
    }

    /// Tokens of the conversation, with `pending` as a further user
    /// message, ending with the assistant's header.
    pub fn prompt_tokens(&self, pending: Option<&str>) -> Result<Vec<u32>> {
        let mut messages = self.messages.clone();
        messages.extend(pending.map(|t| self.user_message(t)));
        let req = RenderRequest::new(messages).with_generation_prompt(true);
        let text = self
            .template
            .render(&req)
            .context("cannot render the conversation with the chat template")?;
        Ok(self.template.encode(self.tok, &text))
    }

    /// Whether a prompt of `n` tokens leaves room for a reply.
    pub fn fits(&self, n: usize) -> bool {
        n < self.n_ctx()
    }

    /// Drops the oldest turns until the conversation (with `pending`)
    /// takes at most half the context, or no earlier turn is left.
    /// Returns how many turns were dropped.
    pub fn make_room(&mut self, pending: Option<&str>) -> Result<usize> {
        let mut dropped = 0;
        while self.prompt_tokens(pending)?.len() > self.n_ctx() / 2 {
            let before = self.images_in_messages();
            if !drop_oldest_turn(&mut self.messages) {
                break;
            }
            // The dropped turns' images go with them.
            let gone = before - self.images_in_messages();
            self.images.drain(..gone.min(self.images.len()));
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Adds the user's message, streams the reply through `on_text`
    /// (which returns false to stop it) and records the reply, as far as
    /// it went, in the conversation.
    pub fn reply(&mut self, user: &str, on_text: impl FnMut(&str) -> bool) -> Result<Turn> {
        let tokens = self.prompt_tokens(Some(user))?;
        if !self.fits(tokens.len()) {
            bail!(
                "the conversation needs {} tokens but the context holds {}",
                tokens.len(),
                self.n_ctx()
            );
        }
        let mut keep = self
            .cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is evaluated in any case: its logits start
        // the reply.
        keep = keep.min(tokens.len() - 1);
        let images: Vec<Arc<PreparedImage>> =
            self.images.iter().chain(&self.queued).cloned().collect();
        let count = |t: &[u32]| {
            self.model
                .info()
                .image_token
                .map_or(0, |id| t.iter().filter(|&&x| x == id).count())
        };
        if count(&tokens) != images.len() {
            bail!(
                "the conversation has {} image tokens for {} images (a loaded conversation \
                 keeps no images, and an image token typed in a message has none)",
                count(&tokens),
                images.len()
            );
        }
        self.state.truncate(keep);
        self.cached.truncate(keep);
        // The images past the kept prefix wait for their tokens (an image
        // seen before keeps its encoding in the model's cache).
        for img in &images[count(&tokens[..keep])..] {
            self.model
                .attach_image(&mut self.state, img)
                .context("cannot encode the image")?;
        }
        let stats = match &mut self.drafter {
            Some((d, spec)) => generate_speculative(
                self.model,
                &mut self.state,
                self.tok,
                &self.cached,
                &tokens[keep..],
                &self.params,
                &mut **d,
                *spec,
                on_text,
            ),
            None => generate_after(
                self.model,
                &mut self.state,
                self.tok,
                &self.cached,
                &tokens[keep..],
                &self.params,
                on_text,
            ),
        }
        .context("generation failed")?;
        self.cached.extend_from_slice(&tokens[keep..]);
        self.cached.extend_from_slice(&stats.tokens);
        self.cached.truncate(self.state.n_past);
        self.messages.push(self.user_message(user));
        self.messages
            .push(ChatMessage::assistant(stats.text.clone()));
        self.images = images;
        self.queued.clear();
        Ok(Turn {
            reused: keep,
            evaluated: tokens.len() - keep,
            stats,
        })
    }
}

/// A line typed at the prompt.
#[derive(Debug, PartialEq)]
enum Input<'a> {
    Say(&'a str),
    Exit,
    Clear,
    Save(&'a str),
    Load(&'a str),
    Image(&'a str),
    Help,
    Unknown(&'a str),
}

fn parse_input(line: &str) -> Input<'_> {
    let t = line.trim();
    if !t.starts_with('/') {
        return Input::Say(line);
    }
    let (cmd, arg) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    let arg = arg.trim();
    match cmd {
        "/exit" | "/quit" => Input::Exit,
        "/clear" => Input::Clear,
        "/save" => Input::Save(arg),
        "/load" => Input::Load(arg),
        "/image" => Input::Image(arg),
        "/help" => Input::Help,
        _ => Input::Unknown(cmd),
    }
}

const HELP: &str = "\
Type a message and press Enter. Ctrl-C stops a reply; Ctrl-D or /exit quits.
  /clear        start over
  /save FILE    save the conversation as JSON (a list of messages)
  /load FILE    load a conversation saved as JSON
  /image FILE   attach an image to the next message (vision models)
  /exit         quit";

/// One line from the terminal, without its line ending; `None` at the end
/// of input. Invalid UTF-8 is replaced, not fatal.
fn read_line(input: &mut impl BufRead) -> Result<Option<String>> {
    let mut buf = Vec::new();
    loop {
        match input.read_until(b'\n', &mut buf) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read the terminal"),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// Asks a yes/no question; anything but yes is no, the end of input too.
fn ask(input: &mut impl BufRead, out: &mut impl Write, question: &str) -> Result<bool> {
    write!(out, "{question} (y/N) ")?;
    out.flush()?;
    let answer = read_line(input)?.unwrap_or_default();
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Set by Ctrl-C while a reply is being generated.
struct Interrupt {
    requested: AtomicBool,
    generating: AtomicBool,
}

fn install_interrupt() -> Result<Arc<Interrupt>> {
    let flag = Arc::new(Interrupt {
        requested: AtomicBool::new(false),
        generating: AtomicBool::new(false),
    });
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.generating.load(Ordering::SeqCst) {
            f.requested.store(true, Ordering::SeqCst);
        } else {
            // At the prompt the terminal has dropped the line typed so far.
            let mut out = std::io::stdout();
            let _ = write!(out, "\n(Ctrl-D or /exit quits)\n> ");
            let _ = out.flush();
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

pub fn run(a: ChatArgs) -> Result<()> {
    let threads = a.threads.resolve()?;
    let max_tokens = max_tokens(a.n_predict)?;
    let sampling = a.sampling.params()?;
    let spec_plan = a.spec.plan()?;
    let template_source = a
        .chat_template_file
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the chat template {}", p.display()))
        })
        .transpose()?;
    let path = a.model.resolve()?;
    let file = load::open_gguf(&path, a.model.load.mode())?;
    let tok = load::tokenizer(&file, &path)?;
    check_logit_bias(&sampling, &tok)?;
    let template = load_template(&file, &path, template_source.as_deref())?;
    let backend = load::backend(threads)?;
    let model = load::model_on(&file, &path, backend.clone())?;
    let n_ctx = match a.ctx_size {
        0 => model.info().n_ctx_train,
        n => n,
    };
    let params = GenerateParams {
        max_tokens,
        sampling,
        stop: a.sampling.stop.clone(),
        special: false,
        prompt_progress: Some(super::run::prompt_progress),
    };
    let state = a.kv.new_state(&*model, n_ctx)?;
    let drafter = match &spec_plan {
        Some(plan) => {
            Some(
                a.spec
                    .drafter(plan, &tok, n_ctx, &backend, a.model.hf_token.as_deref())?,
            )
        }
        None => None,
    };
    let mut session = ChatSession::new(&*model, &tok, &template, state, a.system.clone(), params)?;
    if let (Some(d), Some(plan)) = (drafter, &spec_plan) {
        session.set_drafter(d, plan.params);
    }
    let interrupt = install_interrupt()?;

    eprintln!(
        "edgellama chat: {} ({} tokens of context). /help lists commands; Ctrl-C stops a reply, Ctrl-D or /exit quits.",
        path.display(),
        n_ctx
    );
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let Some(line) = read_line(&mut input)? else {
            writeln!(out)?;
            break;
        };
        match parse_input(&line) {
            Input::Say(text) if text.trim().is_empty() => {}
            Input::Exit => break,
            Input::Help => writeln!(out, "{HELP}")?,
            Input::Clear => {
                session.clear();
                writeln!(out, "(conversation cleared)")?;
            }
            Input::Save("") | Input::Load("") => writeln!(out, "usage: /save FILE, /load FILE")?,
            Input::Save(p) => match write_conversation(Path::new(p), session.messages()) {
                Ok(()) => writeln!(out, "(saved {} messages to {p})", session.messages().len())?,
                Err(e) => writeln!(out, "error: {}", crate::report(&e))?,
            },
            Input::Load(p) => match read_conversation(Path::new(p)) {
                Ok(messages) => {
                    let n = messages.len();
                    session.set_messages(messages);
                    writeln!(out, "(loaded {n} messages from {p})")?;
                }
                Err(e) => writeln!(
                    out,
                    "error: {}; the conversation is unchanged",
                    crate::report(&e)
                )?,
            },
            Input::Image("") => writeln!(out, "usage: /image FILE")?,
            Input::Image(p) => {
                let queued = images::read(&[PathBuf::from(p)])
                    .and_then(|f| session.queue_image(&f[0].bytes));
                match queued {
                    Ok(n) => writeln!(out, "({n} image(s) attached to the next message)")?,
                    Err(e) => writeln!(out, "error: {}", crate::report(&e))?,
                }
            }
            Input::Unknown(c) => writeln!(out, "unknown command {c}; /help lists them")?,
            Input::Say(text) => {
                say(
                    &mut session,
                    text,
                    &interrupt,
                    &mut input,
                    &mut out,
                    a.stats,
                )?;
            }
        }
    }
    Ok(())
}

/// One user message and its streamed reply, with the context checks.
fn say(
    session: &mut ChatSession,
    text: &str,
    interrupt: &Interrupt,
    input: &mut impl BufRead,
    out: &mut impl Write,
    stats: bool,
) -> Result<()> {
    let n_ctx = session.n_ctx();
    let need = session.prompt_tokens(Some(text))?.len();
    if !session.fits(need) {
        writeln!(
            out,
            "The conversation with this message is {need} tokens; the context holds {n_ctx}."
        )?;
        if !ask(input, out, "Drop the oldest turns to make room?")? {
            writeln!(out, "(message not sent)")?;
            return Ok(());
        }
        let dropped = session.make_room(Some(text))?;
        writeln!(out, "(dropped {dropped} oldest turns)")?;
        let need = session.prompt_tokens(Some(text))?.len();
        if !session.fits(need) {
            writeln!(
                out,
                "This message alone is {need} tokens, more than the context of {n_ctx}: not sent."
            )?;
            return Ok(());
        }
    }
    interrupt.requested.store(false, Ordering::SeqCst);
    interrupt.generating.store(true, Ordering::SeqCst);
    let mut write_err = None;
    let turn = session.reply(text, |piece| {
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            write_err = Some(e);
            return false;
        }
        !interrupt.requested.load(Ordering::SeqCst)
    });
    interrupt.generating.store(false, Ordering::SeqCst);
    let turn = turn?;
    if let Some(e) = write_err {
        return Err(e).context("cannot write to the terminal");
    }
    writeln!(out)?;
    if stats {
        eprintln!(
            "[prompt: {} tokens evaluated, {} reused; reply: {} tokens, {:.1} tokens/s]",
            turn.evaluated,
            turn.reused,
            turn.stats.n_generated,
            turn.stats.gen_tps()
        );
        if turn.stats.spec.n_steps > 0 {
            eprintln!("[{}]", spec::describe(&turn.stats.spec));
        }
    }
    match turn.stats.stop {
        FinishReason::Cancelled => writeln!(out, "[stopped]")?,
        FinishReason::ContextFull => {
            writeln!(
                out,
                "[the context of {n_ctx} tokens is full: the reply stops here]"
            )?;
            if ask(input, out, "Drop the oldest turns to make room?")? {
                let dropped = session.make_room(None)?;
                writeln!(out, "(dropped {dropped} oldest turns)")?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellama_sampler::SamplingParams;
    use std::sync::OnceLock;

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

    struct Smol {
        tok: Tokenizer,
        template: ChatTemplate,
        model: Box<dyn CausalLm>,
    }

    fn smol() -> &'static Smol {
        static S: OnceLock<Smol> = OnceLock::new();
        S.get_or_init(|| {
            let path = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
            let file = load::open_gguf(&path, edgellama_gguf::LoadMode::Map).unwrap();
            Smol {
                tok: load::tokenizer(&file, &path).unwrap(),
                template: load_template(&file, &path, None).unwrap(),
                model: load::model(&file, &path, 2).unwrap(),
            }
        })
    }

    fn session(n_ctx: usize) -> ChatSession<'static> {
        let s = smol();
        let params = GenerateParams {
            max_tokens: Some(48),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        };
        let state = s.model.new_state(n_ctx).unwrap();
        ChatSession::new(&*s.model, &s.tok, &s.template, state, None, params).unwrap()
    }

    const Q1: &str = "Write a haiku about the sea.";
    const Q2: &str = "Now one about the moon.";

    /// The second turn evaluates exactly the text the template adds after
    /// the first reply: SmolLM2's end of the assistant turn, the new user
    /// turn and the next assistant header.
    #[test]
    fn second_turn_evaluates_only_the_new_tokens() {
        let mut chat = session(1024);
        let t1 = chat.reply(Q1, |_| true).unwrap();
        assert_eq!(t1.reused, 0);
        assert_eq!(t1.stats.stop, FinishReason::EndOfGeneration);
        let first_prompt = chat.prompt_tokens(None).unwrap().len();
        let t2 = chat.reply(Q2, |_| true).unwrap();
        let added =
            format!("<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n");
        let want = smol().tok.encode(&added, false, true).len();
        assert_eq!(t2.evaluated, want, "reused {}", t2.reused);
        assert_eq!(t2.reused, t1.evaluated + t1.stats.n_generated);
        // 25 new tokens against a conversation of about 90.
        assert!(t2.evaluated * 3 < t2.reused + t2.evaluated);
        assert!(first_prompt > t2.evaluated);
        assert_eq!(chat.messages().len(), 4);
        assert_eq!(chat.messages()[1].text(), t1.stats.text);
    }

    /// The reused cache gives, bit for bit, the logits of replaying the
    /// same evaluations on a fresh state: the first prompt as one batch,
    /// the reply one token at a time, then only the new tokens. Evaluating
    /// the whole conversation as one long batch takes the model's
    /// long-batch attention route (as llama.cpp's does), which agrees only
    /// to rounding.
    #[test]
    fn reused_cache_matches_a_fresh_evaluation() {
        let s = smol();
        let logits = edgellama_models::Logits::Last;
        let mut chat = session(1024);
        let first = chat.prompt_tokens(Some(Q1)).unwrap();
        let t1 = chat.reply(Q1, |_| true).unwrap();
        let tokens = chat.prompt_tokens(Some(Q2)).unwrap();
        let keep = chat
            .cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        assert_eq!(keep, first.len() + t1.stats.tokens.len());
        assert_eq!(chat.cached[..first.len()], first[..]);
        chat.state.truncate(keep);
        let reused = s
            .model
            .forward(&mut chat.state, &tokens[keep..], logits)
            .unwrap();

        let mut state = s.model.new_state(1024).unwrap();
        s.model.forward(&mut state, &first, logits).unwrap();
        for &t in &t1.stats.tokens {
            s.model.forward(&mut state, &[t], logits).unwrap();
        }
        let replay = s
            .model
            .forward(&mut state, &tokens[keep..], logits)
            .unwrap();
        assert!(reused == replay, "reused cache differs from the replay");

        let mut state = s.model.new_state(1024).unwrap();
        let whole = s.model.forward(&mut state, &tokens, logits).unwrap();
        let max_diff = reused
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let range = whole.iter().fold(f32::MIN, |m, &x| m.max(x))
            - whole.iter().fold(f32::MAX, |m, &x| m.min(x));
        assert!(max_diff < 0.05 * range, "{max_diff} vs range {range}");
        assert_eq!(
            edgellama_sampler::argmax(&reused),
            edgellama_sampler::argmax(&whole)
        );
    }

    #[test]
    fn conversation_that_does_not_fit_is_refused_then_trimmed() {
        let mut chat = session(96);
        chat.reply(Q1, |_| true).unwrap();
        let long = "Tell me more about waves and tides, please. ".repeat(4);
        let need = chat.prompt_tokens(Some(&long)).unwrap().len();
        assert!(!chat.fits(need), "{need} tokens should not fit 96");
        let e = chat.reply(&long, |_| true).unwrap_err();
        assert!(format!("{e:#}").contains("context holds 96"), "{e:#}");
        // Refused: nothing recorded.
        assert_eq!(chat.messages().len(), 2);
        assert_eq!(chat.make_room(Some(&long)).unwrap(), 1);
        assert!(chat.messages().is_empty());
        assert!(chat.fits(chat.prompt_tokens(Some(&long)).unwrap().len()));
    }

    #[test]
    fn full_context_during_a_reply_is_reported() {
        let s = smol();
        let params = GenerateParams {
            sampling: SamplingParams::greedy(),
            ..Default::default()
        };
        // SmolLM2 answers this one with a list that never ends.
        let state = s.model.new_state(80).unwrap();
        let mut chat =
            ChatSession::new(&*s.model, &s.tok, &s.template, state, None, params).unwrap();
        let t = chat
            .reply("What is the capital of France?", |_| true)
            .unwrap();
        assert_eq!(t.stats.stop, FinishReason::ContextFull);
        assert_eq!(t.evaluated + t.stats.n_generated, 80 + 1);
        // The reply as far as it went is kept.
        assert_eq!(chat.messages()[1].text(), t.stats.text);
        assert_eq!(chat.make_room(None).unwrap(), 1);
    }

    fn msgs(roles: &[&str]) -> Vec<ChatMessage> {
        roles
            .iter()
            .enumerate()
            .map(|(i, r)| ChatMessage::new(*r, i.to_string()))
            .collect()
    }

    fn roles_and_texts(m: &[ChatMessage]) -> Vec<String> {
        m.iter()
            .map(|m| format!("{}{}", m.role, m.text()))
            .collect()
    }

    #[test]
    fn dropping_turns_keeps_system_messages() {
        let mut m = msgs(&[
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "tool",
            "user",
        ]);
        assert!(drop_oldest_turn(&mut m));
        assert_eq!(
            roles_and_texts(&m),
            ["system0", "user3", "assistant4", "tool5", "user6"]
        );
        assert!(drop_oldest_turn(&mut m));
        assert_eq!(roles_and_texts(&m), ["system0", "user6"]);
        assert!(drop_oldest_turn(&mut m));
        assert_eq!(roles_and_texts(&m), ["system0"]);
        assert!(!drop_oldest_turn(&mut m));
        let mut m = msgs(&["assistant", "user"]);
        assert!(drop_oldest_turn(&mut m));
        assert_eq!(roles_and_texts(&m), ["user1"]);
    }

    #[test]
    fn save_and_load_round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("edgellama-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        let m = vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("สวัสดี 👋"),
            ChatMessage::assistant("Hello!"),
        ];
        write_conversation(&p, &m).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "สวัสดี 👋"},
                {"role": "assistant", "content": "Hello!"}
            ])
        );
        assert_eq!(read_conversation(&p).unwrap(), m);
        std::fs::write(&p, r#"{"messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(
            read_conversation(&p).unwrap(),
            vec![ChatMessage::user("hi")]
        );

        for (text, needle) in [
            ("[{\"role\": \"user\"", "not valid JSON"),
            ("{\"msgs\": []}", "\"messages\""),
            ("42", "\"messages\""),
            (
                "[{\"content\": \"no role\"}]",
                "not a list of chat messages",
            ),
            ("[1, 2]", "not a list of chat messages"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_conversation(&p).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{text}: {e:#}");
        }
        let e = read_conversation(&dir.join("missing.json")).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn typed_lines() {
        assert_eq!(parse_input("hello"), Input::Say("hello"));
        assert_eq!(parse_input("  /exit "), Input::Exit);
        assert_eq!(
            parse_input("/save  my file.json "),
            Input::Save("my file.json")
        );
        assert_eq!(parse_input("/load"), Input::Load(""));
        assert_eq!(parse_input("/clear"), Input::Clear);
        assert_eq!(parse_input("/nope x"), Input::Unknown("/nope"));
        let mut input: &[u8] = b"first\r\nsecond\xff\nlast";
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("first"));
        assert_eq!(
            read_line(&mut input).unwrap().as_deref(),
            Some("second\u{FFFD}")
        );
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("last"));
        assert_eq!(read_line(&mut input).unwrap(), None);
    }

    /// A Llama 3 vocabulary adds BOS and its template writes it too: the
    /// prompt must start with exactly one.
    #[test]
    fn rendered_prompt_has_one_bos() {
        let path = testdata("ggml-vocab-llama-bpe.gguf");
        let file = load::open_gguf(&path, edgellama_gguf::LoadMode::Map).unwrap();
        let tok = load::tokenizer(&file, &path).unwrap();
        let template = load_template(&file, &path, None).unwrap();
        let req = RenderRequest::new(vec![ChatMessage::user("Hi")]).with_generation_prompt(true);
        let text = template.render(&req).unwrap();
        assert!(text.starts_with("<|begin_of_text|>"), "{text}");
        let ids = template.encode(&tok, &text);
        assert_eq!(ids[0], 128000);
        assert_ne!(ids[1], 128000);
        assert_eq!(tok.decode(&ids, true), text);
    }
}
