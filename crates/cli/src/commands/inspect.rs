use crate::load;
use anyhow::Result;
use clap::Args;
use edgellama_gguf::MetadataValue;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model file (GGUF).
    pub file: PathBuf,
    /// Print whole arrays instead of their first elements.
    #[arg(long = "full")]
    pub full: bool,
}

const ARRAY_PREVIEW: usize = 8;
const STRING_PREVIEW: usize = 160;

fn short(s: &str, full: bool) -> String {
    if full || s.chars().count() <= STRING_PREVIEW {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(STRING_PREVIEW).collect();
        format!("{head:?}... ({} chars)", s.chars().count())
    }
}

fn render(v: &MetadataValue, full: bool) -> String {
    match v {
        MetadataValue::String(s) => short(s, full),
        MetadataValue::Array(a) => {
            let n = a.len();
            let shown = if full { n } else { n.min(ARRAY_PREVIEW) };
            let items: Vec<String> = (0..shown)
                .filter_map(|i| a.get(i))
                .map(|x| render(&x, full))
                .collect();
            let more = if shown < n { ", ..." } else { "" };
            format!("[{}{more}] ({n} items)", items.join(", "))
        }
        MetadataValue::U8(x) => x.to_string(),
        MetadataValue::I8(x) => x.to_string(),
        MetadataValue::U16(x) => x.to_string(),
        MetadataValue::I16(x) => x.to_string(),
        MetadataValue::U32(x) => x.to_string(),
        MetadataValue::I32(x) => x.to_string(),
        MetadataValue::U64(x) => x.to_string(),
        MetadataValue::I64(x) => x.to_string(),
        MetadataValue::F32(x) => x.to_string(),
        MetadataValue::F64(x) => x.to_string(),
        MetadataValue::Bool(x) => x.to_string(),
    }
}

pub fn run(a: InspectArgs) -> Result<()> {
    let file = load::open_gguf(&a.file, edgellama_gguf::LoadMode::Map)?;
    println!("file: {}", a.file.display());
    println!(
        "GGUF version {}, alignment {}, {} metadata keys, {} tensors",
        file.version(),
        file.alignment(),
        file.metadata().len(),
        file.tensors().len()
    );
    println!();
    println!("metadata:");
    for (k, v) in file.metadata() {
        println!("  {k} = {}", render(v, a.full));
    }
    let extra = edgellama_models::describe(&file);
    if !extra.is_empty() {
        println!();
        for line in extra {
            println!("{line}");
        }
    }
    println!();
    println!("tensors:");
    println!(
        "  {:<40} {:>6} {:>24} {:>14} {:>12}",
        "name", "type", "dims", "offset", "bytes"
    );
    let (mut params, mut bytes) = (0u64, 0u64);
    for t in file.tensors() {
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        println!(
            "  {:<40} {:>6} {:>24} {:>14} {:>12}",
            t.name,
            t.ggml_type.name(),
            dims.join(" x "),
            t.offset,
            t.n_bytes()
        );
        params += t.n_elements();
        bytes += t.n_bytes();
    }
    println!();
    println!(
        "{} parameters, {:.2} MiB of tensor data ({:.2} bits per weight)",
        params,
        bytes as f64 / (1024.0 * 1024.0),
        if params > 0 {
            bytes as f64 * 8.0 / params as f64
        } else {
            0.0
        }
    );
    Ok(())
}
