use crate::load;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model or vocabulary-only file (GGUF).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text to tokenize (or use -p).
    pub text: Option<String>,
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Print only the ids, as a list on one line.
    #[arg(long = "ids")]
    pub ids: bool,
    /// Do not add a BOS token even if the model normally adds one.
    #[arg(long = "no-bos")]
    pub no_bos: bool,
    /// Treat special-token text such as `<|eot_id|>` as plain text.
    #[arg(long = "no-parse-special")]
    pub no_parse_special: bool,
    /// Print the number of tokens.
    #[arg(long = "show-count")]
    pub show_count: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.prompt) {
        (Some(t), None) | (None, Some(t)) => t.clone(),
        (Some(_), Some(_)) => bail!("give the text either as an argument or with -p, not both"),
        (None, None) => bail!("no text to tokenize: pass it as an argument or with -p"),
    };
    let file = load::open_gguf(&a.model, edgellama_gguf::LoadMode::Map)?;
    let tok = load::tokenizer(&file, &a.model)?;
    let ids = tok.encode(&text, tok.adds_bos() && !a.no_bos, !a.no_parse_special);
    if a.ids {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("[{}]", list.join(", "));
    } else {
        for &id in &ids {
            let piece = tok.token_to_piece(id);
            println!("{id:6} -> '{}'", String::from_utf8_lossy(&piece));
        }
    }
    if a.show_count {
        println!("Total number of tokens: {}", ids.len());
    }
    Ok(())
}
