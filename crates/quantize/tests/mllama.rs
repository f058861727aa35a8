//! Llama 3.2 Vision (mllama) files: the text model takes llama-quantize's
//! rules, the vision tower and projector the vision type, and the tables,
//! norms, biases and gates stay F32. The expected type of every tensor is
//! written out below from those rules for the tiny test model, then checked
//! against the plan and the written file, whose data must dequantize to
//! within each type's rounding error of the input.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::threads;
use edgellama_gguf::{GgmlType, GgufFile};
use edgellama_quantize::{
    plan_file, quantize_file, FileType, NoProgress, PlanOptions, QuantizeError, QuantizeOptions,
    VisionType,
};

use GgmlType as T;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-mllama");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The tiny Llama 3.2 Vision checkpoint converted to F32, once per run:
/// 5 text blocks of width 32 (feed-forward 64) with cross-attention at 1 and
/// 3, a vision tower of width 32 (4 local and 2 global layers, 14-pixel
/// patches) and a projector from 3 * 32 to 32.
fn f32_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::var_os("EDGELLAMA_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata")
            })
            .join("tiny-mllama");
        assert!(
            dir.join("config.json").is_file(),
            "test data {} is missing: run scripts/fetch-testdata.sh",
            dir.display()
        );
        let out = scratch("tiny-mllama-f32.gguf");
        edgellama_convert::Converter::open(&dir, edgellama_convert::OutType::F32)
            .unwrap()
            .write_to_path(&out)
            .unwrap();
        out
    })
}

/// Tensors that stay as they are (F32 here) whatever the types: 1-D tensors,
/// norms, biases, gates, and the vision tower's position tables.
fn kept(name: &str) -> bool {
    const TABLES: [&str; 4] = [
        "v.position_embd.weight",
        "v.tile_position_embd.weight",
        "v.pre_tile_position_embd.weight",
        "v.post_tile_position_embd.weight",
    ];
    TABLES.contains(&name)
        || name == "rope_freqs.weight"
        || name == "v.class_embd"
        || name.ends_with("_norm.weight")
        || name.ends_with("_ln.weight")
        || name.ends_with(".bias")
        || name.ends_with(".gate")
        // blk.N.cross_attn_{attn,mlp}_gate, v.global.blk.N.{attn,ffn}_gate
        || name.ends_with("_gate")
}

/// The block of a `blk.N.` name.
fn layer(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type each tensor of the tiny model must get, and the type the rules
/// wanted when its rows could not hold that type's blocks.
fn expected(name: &str, ftype: FileType, vision: VisionType) -> (GgmlType, Option<GgmlType>) {
    if kept(name) {
        return (T::F32, None);
    }
    if name.starts_with("v.") || name.starts_with("mm.") {
        // The patch embedding is [14, 14, 3, 32]: rows of 14 (588 per patch
        // once flattened) hold no 32-element block.
        if name == "v.patch_embd.weight" && vision == VisionType::Q8_0 {
            return (T::F16, Some(T::Q8_0));
        }
        return (vision.ggml_type(), None);
    }
    // The text model. Every row is 32 or 64 wide: no 256-element K-quant
    // block fits, so the K-quant choices fall back (Q4_K to Q5_0, Q6_K to
    // Q8_0).
    match ftype {
        FileType::Q8_0 => (T::Q8_0, None),
        // The output projection gets Q6_K unless the mix is Q8_0.
        FileType::Q4_0 if name == "output.weight" => (T::Q8_0, Some(T::Q6_K)),
        FileType::Q4_0 => (T::Q4_0, None),
        FileType::Q4_K_M => {
            // Rows of 32 cannot hold Q6_K, so the output rule itself picks Q8_0.
            if name == "output.weight" {
                return (T::Q8_0, None);
            }
            let q6 = (T::Q8_0, Some(T::Q6_K));
            let q4 = (T::Q5_0, Some(T::Q4_K));
            // Q6_K for the layers use_more_bits(i, n) picks: i < n/8,
            // i >= 7n/8, or (i - n/8) % 3 == 2. attn_v counts the three
            // self-attention layers 0, 2, 4 as i = 0, 1, 2 of n = 3 (the
            // cross-attention layers have no attn_v, the vision tower's
            // attn_v do not count): only i = 2, blk.4. ffn_down counts every
            // block, i = N of n = 5: blocks 2 and 4.
            match (layer(name), name.rsplit_once('.').map(|(stem, _)| stem)) {
                (Some(4), Some("blk.4.attn_v")) => q6,
                (Some(2 | 4), Some(s)) if s.ends_with(".ffn_down") => q6,
                // token_embd, attn_q/k/v/output, ffn_gate/up/down and the
                // cross-attention projections.
                _ => q4,
            }
        }
        other => panic!("no expectation written for {other}"),
    }
}

fn options(ftype: FileType, vision: VisionType) -> QuantizeOptions {
    let mut opts = QuantizeOptions::new(ftype);
    opts.threads = threads();
    opts.plan = PlanOptions {
        vision_type: vision,
        ..PlanOptions::default()
    };
    opts
}

/// Whether `got` is `want` stored as `ty` and read back: within half an f16
/// or bf16 ulp, or for the block types within the rounding of each
/// 32-element block (rows are whole blocks here); F32 exactly.
fn within_error(name: &str, ty: GgmlType, want: &[f32], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{name}");
    if ty == T::F32 {
        assert_eq!(want, got, "{name} must be copied as is");
        return;
    }
    let block = if ty.block_size() > 1 { 32 } else { 1 };
    for (i, (w, g)) in want.chunks(block).zip(got.chunks(block)).enumerate() {
        let amax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        // A block's values are q * d, d = amax / `levels` stored as f16
        // (relative error 2^-11, times |q| <= `max_q`), with q rounded (half
        // a step) or, for the value opposite the largest, clamped (one step).
        let step = |levels: f32, rounding: f32, max_q: f32| {
            amax / levels * (rounding + max_q * 2f32.powi(-11))
        };
        for (j, (&w, &g)) in w.iter().zip(g).enumerate() {
            let limit = match ty {
                T::F16 => w.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                T::BF16 => w.abs() * 2f32.powi(-8) + 1e-38,
                T::Q8_0 => step(127.0, 0.5, 127.0),
                T::Q4_0 => step(8.0, 1.0, 8.0),
                T::Q5_0 => step(16.0, 1.0, 16.0),
                other => panic!("{name}: no error bound written for {other}"),
            };
            assert!(
                (w - g).abs() <= limit * 1.0001 + 1e-9,
                "{name} as {ty}: element {} is {g}, input {w} (limit {limit})",
                i * block + j
            );
        }
    }
}

fn f32_values(file: &GgufFile, name: &str) -> Vec<f32> {
    let (info, bytes) = file.tensor_bytes(name).unwrap();
    let n = info.dims.iter().product::<u64>() as usize;
    edgellama_kernels::dequantize_tensor(info.ggml_type, bytes, n).unwrap()
}

/// Quantizes the tiny model and checks every tensor's type in the plan and
/// in the file read back, and the data of a few of them.
fn check(ftype: FileType, vision: VisionType) {
    let input_path = f32_model();
    let input = GgufFile::open(input_path).unwrap();
    let out = scratch(&format!("tiny-mllama-{ftype}-vision-{vision}.gguf"));
    let report = quantize_file(input_path, &out, &options(ftype, vision), &NoProgress).unwrap();
    let output = GgufFile::open(&out).unwrap();
    assert_eq!(
        output.get_u32_opt("general.file_type"),
        Some(ftype.llama_ftype())
    );
    assert_eq!(input.tensors().len(), 149);
    assert_eq!(output.tensors().len(), input.tensors().len());

    let mut n_fallback = 0;
    for t in input.tensors() {
        assert_eq!(t.ggml_type, T::F32, "{}: the input is all F32", t.name);
        let (ty, fallback_from) = expected(&t.name, ftype, vision);
        n_fallback += usize::from(fallback_from.is_some());
        let planned = report.plan.get(&t.name).unwrap();
        assert_eq!(
            (planned.target, planned.fallback_from),
            (ty, fallback_from),
            "{} under {ftype} with vision {vision}",
            t.name
        );
        let written = output.tensor(&t.name).unwrap();
        assert_eq!(written.ggml_type, ty, "{} in the file", t.name);
        // Only trailing dimensions of 1 are dropped (the gates' [1] stays).
        let mut dims = t.dims.clone();
        while dims.len() > 1 && dims.last() == Some(&1) {
            dims.pop();
        }
        assert_eq!(written.dims, dims, "{}", t.name);
    }
    assert_eq!(report.plan.n_fallback, n_fallback);

    for name in [
        "token_embd.weight",
        "output.weight",
        "blk.0.attn_q.weight",
        "blk.4.attn_v.weight",
        "blk.2.ffn_down.weight",
        "blk.1.cross_attn_q_proj.weight",
        "blk.3.cross_attn_v_proj.weight",
        "blk.1.cross_attn_q_norm.weight",
        "blk.1.cross_attn_attn_gate",
        "v.patch_embd.weight",
        "v.blk.0.attn_q.weight",
        "v.global.blk.1.ffn_down.weight",
        "v.global.blk.0.attn_gate",
        "v.tile_position_embd.weight",
        "mm.0.weight",
        "mm.0.bias",
    ] {
        let ty = output.tensor(name).unwrap().ggml_type;
        within_error(
            name,
            ty,
            &f32_values(&input, name),
            &f32_values(&output, name),
        );
    }
}

#[test]
fn q4_k_m_text_with_the_vision_tower_at_f16() {
    check(FileType::Q4_K_M, VisionType::default());
}

#[test]
fn q8_0_text_with_the_vision_tower_at_f16() {
    check(FileType::Q8_0, VisionType::F16);
}

#[test]
fn q4_0_text_with_the_vision_tower_at_f16() {
    check(FileType::Q4_0, VisionType::F16);
}

#[test]
fn q8_0_vision_tower_falls_back_to_f16_for_the_patch_embedding() {
    check(FileType::Q8_0, VisionType::Q8_0);
    check(FileType::Q4_K_M, VisionType::Q8_0);
}

#[test]
fn vision_tower_at_f32_and_bf16() {
    check(FileType::Q4_0, VisionType::F32);
    check(FileType::Q8_0, VisionType::BF16);
}

/// The text-model options leave the vision tower alone: `--pure` gives the
/// text matrices the mix's type, `--leave-output-tensor` keeps the output.
#[test]
fn text_options_do_not_reach_the_vision_tower() {
    let file = GgufFile::open(f32_model()).unwrap();
    let opts = PlanOptions {
        pure: true,
        leave_output_tensor: true,
        vision_type: VisionType::Q8_0,
    };
    let plan = plan_file(&file, FileType::Q4_0, &opts).unwrap();
    for t in &plan.tensors {
        let want = if kept(&t.name) || t.name == "output.weight" {
            T::F32
        } else if t.name == "v.patch_embd.weight" {
            T::F16
        } else if t.name.starts_with("v.") || t.name.starts_with("mm.") {
            T::Q8_0
        } else {
            T::Q4_0
        };
        assert_eq!(t.target, want, "{}", t.name);
    }
}

/// The rules' counters see only the text model: with the vision tower's
/// attn_v and ffn_down counted, or the cross-attention v projections taken
/// for attn_v, the `_M` mixes would promote other layers.
#[test]
fn layer_counts_are_the_text_models() {
    let file = GgufFile::open(f32_model()).unwrap();
    let plan = plan_file(&file, FileType::Q5_K_M, &PlanOptions::default()).unwrap();
    let promoted: Vec<&str> = plan
        .tensors
        .iter()
        .filter(|t| t.fallback_from == Some(T::Q6_K))
        .map(|t| t.name.as_str())
        .collect();
    // attn_v: i = 2 of the 3 self-attention layers; ffn_down: blocks 2, 4 of 5.
    assert_eq!(
        promoted,
        [
            "blk.2.ffn_down.weight",
            "blk.4.attn_v.weight",
            "blk.4.ffn_down.weight",
        ]
    );
    for t in &plan.tensors {
        if t.name.contains("cross_attn_") && t.name.ends_with("_proj.weight") {
            // Q5_K falls back to Q5_1 for rows of 32: the mix's default.
            assert_eq!(
                (t.target, t.fallback_from),
                (T::Q5_1, Some(T::Q5_K)),
                "{}",
                t.name
            );
        }
    }
}

#[test]
fn unknown_vision_types_are_refused() {
    for name in ["q4_0", "Q4_K_M", "fp16", ""] {
        let err = VisionType::parse(name).unwrap_err();
        assert!(
            matches!(err, QuantizeError::UnknownVisionType { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("'{name}'")) && msg.contains("f32, f16, bf16, q8_0"),
            "{msg}"
        );
    }
    assert_eq!(VisionType::parse(" Q8_0 ").unwrap(), VisionType::Q8_0);
}
