//! `edgellama`: run Llama models on the device in front of you.

mod commands;
mod fetch;
mod images;
mod load;
mod spec;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edgellama",
    version,
    about = "Llama 3.2 inference on your own machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt.
    Run(commands::run::RunArgs),
    /// Talk with a model, turn by turn, in the terminal.
    Chat(commands::chat::ChatArgs),
    /// Serve an OpenAI-compatible HTTP API and a chat page, batching requests.
    Serve(commands::serve::ServeArgs),
    /// Print a model file's metadata and tensor table.
    Inspect(commands::inspect::InspectArgs),
    /// Print the token ids of a text.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Print the prompt a conversation becomes under the model's chat template.
    Template(commands::template::TemplateArgs),
    /// Judge a prompt or a reply with a Llama Guard model (safe or unsafe, with scores).
    Guard(commands::guard::GuardArgs),
    /// Score a text file (llama-perplexity's method).
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Measure prompt and generation speed (llama-bench's method).
    Bench(commands::bench::BenchArgs),
    /// Quantize a model file (llama-quantize's types and per-tensor choices).
    Quantize(commands::quantize::QuantizeArgs),
    /// Convert a Hugging Face safetensors checkpoint to GGUF.
    Convert(commands::convert::ConvertArgs),
    /// Download a model from the Hugging Face hub into its cache.
    Pull(commands::pull::PullArgs),
    /// List the models in the Hugging Face cache.
    List(commands::list::ListArgs),
    /// Remove models from the Hugging Face cache.
    Rm(commands::rm::RmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(load::expand_shorthands(std::env::args_os()));
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Template(a) => commands::template::run(a),
        Command::Guard(a) => commands::guard::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Pull(a) => commands::pull::run(a),
        Command::List(a) => commands::list::run(a),
        Command::Rm(a) => commands::rm::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, joined with ": ". A library error that
/// already prints its cause in its own message (`"i/o error on P: {source}"`)
/// also names it as its source; that cause is not repeated.
pub(crate) fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("i/o error on m.gguf: {source}")]
    struct Io {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Io { source: io }).context("cannot load model m.gguf");
        assert_eq!(
            report(&e),
            "cannot load model m.gguf: i/o error on m.gguf: no such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&plain), "outer: inner");
    }
}
