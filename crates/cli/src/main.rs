//! `edgellama`: run Llama models on the device in front of you.

mod commands;
mod fetch;
mod load;

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
    let cli = Cli::parse_from(load::expand_hf_shorthands(std::env::args_os()));
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Template(a) => commands::template::run(a),
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
