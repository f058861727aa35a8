use anyhow::{bail, Context, Result};
use clap::Args;
use edgellama_quantize::{
    quantize_file, FileType, Plan, PlanOptions, Progress, QuantizeOptions, TensorPlan, VisionType,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model to quantize (GGUF, ideally F32, F16 or BF16).
    pub input: PathBuf,
    /// Where to write the quantized model (replaced if it exists).
    pub output: PathBuf,
    /// Quantization type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M,
    /// Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16 or F32
    /// (any case; Q3_K, Q4_K, Q5_K mean the _M mixes).
    #[arg(value_name = "TYPE")]
    pub ftype: String,
    /// Threads converting rows (default: every available CPU).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Allow converting tensors that are already quantized (quality suffers).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Give every tensor the type's default, without llama-quantize's
    /// per-tensor mix (row-length fallbacks still apply).
    #[arg(long)]
    pub pure: bool,
    /// Keep output.weight as it is.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Type of a Llama 3.2 Vision model's vision tower and projector
    /// matrices, whatever the text model gets: f32, f16, bf16 or q8_0 (any
    /// case). Rows that do not hold whole q8_0 blocks fall back to f16;
    /// position tables, norms, biases and gates stay as they are. Accepted
    /// and ignored for text-only models.
    #[arg(long, value_name = "TYPE", default_value = "f16")]
    pub vision_type: String,
}

/// Bytes converted, with the tensor being worked on as the message.
struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn begin(&self, plan: &Plan) {
        self.bar
            .set_length(plan.tensors.iter().map(TensorPlan::n_elements).sum());
    }

    fn tensor(&self, _index: usize, t: &TensorPlan) {
        self.bar
            .set_message(format!("{} {} -> {}", t.name, t.source, t.target));
    }

    fn advance(&self, elements: u64) {
        self.bar.inc(elements);
    }
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let ftype = FileType::parse(&a.ftype)?;
    let vision_type = VisionType::parse(&a.vision_type).context("--vision-type")?;
    let threads = a.threads.unwrap_or_else(crate::load::all_cpus);
    if threads == 0 || threads > 1024 {
        bail!("-t must be between 1 and 1024, got {threads}");
    }
    let opts = QuantizeOptions {
        ftype,
        threads,
        allow_requantize: a.allow_requantize,
        plan: PlanOptions {
            pure: a.pure,
            leave_output_tensor: a.leave_output_tensor,
            vision_type,
        },
    };

    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {wide_msg}",
        )
        .context("progress bar template")?,
    );
    let start = Instant::now();
    let result = quantize_file(&a.input, &a.output, &opts, &Bar { bar: bar.clone() });
    bar.finish_and_clear();
    let report = result.with_context(|| {
        format!(
            "cannot quantize {} to {} as {ftype}",
            a.input.display(),
            a.output.display()
        )
    })?;

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let n_elements: u64 = report.plan.tensors.iter().map(TensorPlan::n_elements).sum();
    let bpw = |b: u64| b as f64 * 8.0 / n_elements.max(1) as f64;
    // One line per kind of fallback rather than llama-quantize's line per
    // tensor; a lone tensor is named.
    let mut fallbacks: BTreeMap<(String, String, u64), Vec<&str>> = BTreeMap::new();
    for t in &report.plan.tensors {
        if let Some(wanted) = t.fallback_from {
            let key = (wanted.to_string(), t.target.to_string(), t.row_len());
            fallbacks.entry(key).or_default().push(&t.name);
        }
    }
    for ((wanted, used, row_len), names) in &fallbacks {
        match names.as_slice() {
            [name] => {
                eprintln!("{name}: rows of {row_len} cannot hold {wanted} blocks: used {used}")
            }
            _ => eprintln!(
                "{} tensor(s) with rows of {row_len} cannot hold {wanted} blocks: used {used}",
                names.len()
            ),
        }
    }
    eprintln!(
        "model size: {:.2} MiB ({:.2} BPW), quantized: {:.2} MiB ({:.2} BPW), {} tensors, {} fell back, {:.1} s",
        mib(report.input_tensor_bytes),
        bpw(report.input_tensor_bytes),
        mib(report.output_tensor_bytes),
        bpw(report.output_tensor_bytes),
        report.plan.tensors.len(),
        report.plan.n_fallback,
        start.elapsed().as_secs_f64()
    );
    println!("{}", a.output.display());
    Ok(())
}
