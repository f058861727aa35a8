//! `edgellama chat` in a pseudo-terminal, used as a person would: typing
//! lines, pressing Ctrl-C during a long reply and Ctrl-D to leave, with the
//! real SmolLM2 model and greedy decoding.

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

/// Only a hang detector: replies take a second or two, but a CI machine
/// running other tests beside these may be much slower.
const WAIT: Duration = Duration::from_secs(60);

/// A program running in a pseudo-terminal, and everything it printed.
struct Term {
    out: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read.
    pos: usize,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

impl Term {
    fn spawn(args: &[&str]) -> Term {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 200,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_edgellama"));
        cmd.args(args);
        cmd.cwd(std::env::temp_dir());
        let child = pty.slave.spawn_command(cmd).expect("spawn edgellama");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with an error (EIO) once the program has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Term {
            out,
            pos: 0,
            writer,
            child,
            _master: pty.master,
        }
    }

    /// All output so far, with the terminal's carriage returns removed.
    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace('\r', "")
    }

    fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Types a line and presses Enter; the terminal's echo of it is read
    /// past, so it is not taken for output.
    fn line(&mut self, text: &str) {
        self.send(&format!("{text}\r"));
        self.expect(&format!("{text}\n"));
    }

    /// Waits until `needle` appears after what was already read; returns
    /// the text up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let all = self.transcript();
            if let Some(i) = all.get(self.pos..).and_then(|s| s.find(needle)) {
                let got = all[self.pos..self.pos + i + needle.len()].to_string();
                self.pos += i + needle.len();
                return got;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "no {needle:?} within {WAIT:?}; output after the last match:\n{}",
                    &all[self.pos.min(all.len())..]
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads through the next reply: up to the stats line and the prompt.
    /// Returns the reply and (evaluated, reused) prompt tokens.
    fn reply(&mut self) -> (String, usize, usize) {
        let text = self.expect("[prompt: ");
        let stats = self.expect("]");
        self.expect("\n> ");
        let nums: Vec<usize> = stats
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let reply = text.trim_end_matches("[prompt: ").trim().to_string();
        (reply, nums[0], nums[1])
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > WAIT {
                panic!("still running after {WAIT:?}:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
        }
    }
}

fn chat(ctx: &str, extra: &[&str]) -> Term {
    let model = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut args = vec![
        "chat",
        "-m",
        model.to_str().unwrap(),
        "--temp",
        "0",
        "-t",
        "2",
        "-c",
        ctx,
        "--stats",
    ];
    args.extend_from_slice(extra);
    let mut t = Term::spawn(&args);
    t.expect("> ");
    t
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellama-pty-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn conversation_with_interrupt_and_end_of_input() {
    // Replies are capped, so the one after the interrupted reply (whose
    // length depends on when Ctrl-C lands) ends soon whatever it says.
    let mut t = chat("2048", &["-n", "200"]);
    // Ctrl-C at the prompt drops the half-typed line and says how to quit.
    t.send("half a line");
    t.send("\x03");
    t.expect("(Ctrl-D or /exit quits)\n> ");
    assert!(t.alive());
    t.line("Write a haiku about the sea.");
    let (first, evaluated, reused) = t.reply();
    assert!(first.contains("sea") || first.len() > 20, "{first:?}");
    assert_eq!(reused, 0);
    assert!(evaluated > 20);

    // SmolLM2 answers this one with a list that does not end: Ctrl-C
    // stops the reply, not the program.
    t.line("What is the capital of France?");
    t.expect("la ");
    t.send("\x03");
    t.expect("[stopped]");
    t.expect("\n> ");
    assert!(t.alive(), "Ctrl-C ended the program:\n{}", t.transcript());

    // The next question is answered, and only the new turn is evaluated:
    // the cache holds the rest.
    t.line("Now one about the moon.");
    let (moon, evaluated, reused) = t.reply();
    assert!(!moon.is_empty());
    assert!(
        reused > 3 * evaluated,
        "{evaluated} evaluated, {reused} reused"
    );
    // The template's text around the new message is about 25 tokens.
    assert!(evaluated < 40, "{evaluated} evaluated");

    // Ctrl-D at an empty prompt leaves.
    t.send("\x04");
    let status = t.wait_exit();
    assert!(status.success(), "{status:?}\n{}", t.transcript());
    assert!(!t.transcript().contains("panicked"));
}

#[test]
fn save_clear_load_and_exit() {
    let dir = scratch("save");
    let conv = dir.join("conv.json");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "[{\"role\": \"user\", \"content\": ").unwrap();
    let mut t = chat("2048", &["--system", "You are a poet."]);

    t.line("Write a haiku about the sea.");
    let (first, _, _) = t.reply();
    t.line(&format!("/save {}", conv.display()));
    t.expect("(saved 3 messages");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&conv).unwrap()).unwrap();
    assert_eq!(
        saved[0],
        serde_json::json!({"role": "system", "content": "You are a poet."})
    );
    assert_eq!(
        saved[1],
        serde_json::json!({"role": "user", "content": "Write a haiku about the sea."})
    );
    assert_eq!(saved[2]["role"], "assistant");
    let saved_reply = saved[2]["content"].as_str().unwrap();
    assert_eq!(saved_reply.trim(), first);

    // After /clear the same question renders the same prompt as the first
    // turn, which the cache still holds: only its last token is evaluated.
    t.line("/clear");
    t.expect("(conversation cleared)");
    t.line("Write a haiku about the sea.");
    let (_, evaluated, reused) = t.reply();
    assert_eq!(evaluated, 1, "{reused} reused");

    // A malformed file is a message; the program and conversation go on.
    t.line(&format!("/load {}", bad.display()));
    t.expect("not valid JSON");
    t.expect("unchanged");
    t.expect("\n> ");
    t.line("/load");
    t.expect("usage: /save FILE, /load FILE");
    t.line("/bogus");
    t.expect("unknown command /bogus");
    t.expect("\n> ");

    t.line(&format!("/load {}", conv.display()));
    t.expect("(loaded 3 messages");
    t.expect("\n> ");
    t.line("Now one about the moon.");
    let (moon, evaluated, reused) = t.reply();
    assert!(!moon.is_empty());
    assert!(reused > evaluated, "{evaluated} evaluated, {reused} reused");
    t.line(&format!("/save {}", conv.display()));
    t.expect("(saved 5 messages");

    t.line("/exit");
    let status = t.wait_exit();
    assert!(status.success(), "{status:?}\n{}", t.transcript());
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&conv).unwrap()).unwrap();
    let roles: Vec<&str> = saved
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn full_context_offers_to_drop_old_turns() {
    let mut t = chat("160", &[]);
    t.line("Write a haiku about the sea.");
    t.reply();
    // The endless answer fills the context: it says so and asks.
    t.line("What is the capital of France?");
    t.expect("the context of 160 tokens is full");
    t.expect("Drop the oldest turns to make room? (y/N) ");
    t.line("y");
    t.expect("(dropped 2 oldest turns)");
    t.expect("\n> ");
    // A message too long for the context: refused unless turns are dropped.
    let long = "Tell me about the waves and the tides of the sea. ".repeat(12);
    t.line(long.trim());
    t.expect("the context holds 160");
    t.expect("(y/N) ");
    t.line("n");
    t.expect("(message not sent)");
    t.expect("\n> ");
    assert!(t.alive());
    t.send("\x04");
    assert!(t.wait_exit().success());
}
