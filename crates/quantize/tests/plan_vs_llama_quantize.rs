//! The planner against llama-quantize: for every type, the same type for every
//! tensor, the same visiting order and the same fallback count, on SmolLM2
//! (576-wide rows: K-quant fallbacks, tied embeddings), the tiny Llama 3.2
//! model, and synthetic shapes that reach the other rules (untied output,
//! 8-way GQA, 80 blocks, 8 experts, falcon). Only names and shapes are
//! needed, so nothing is quantized here.

mod common;

use common::{ggml_type, golden, strings, testdata};
use edgellama_gguf::GgufFile;
use edgellama_quantize::{plan, FileType, ModelInfo, Plan, PlanOptions, TensorDesc};
use serde_json::Value;

/// Compares one plan with llama-quantize's names, types and fallback count.
fn check(model: &str, qtype: &str, ours: &Plan, names: &[String], expected: &Value) {
    let got_names: Vec<&str> = ours.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got_names, names, "{model} {qtype}: tensor order");
    let types = strings(&expected["tensor_types"]);
    let wrong: Vec<String> = ours
        .tensors
        .iter()
        .zip(&types)
        .filter(|(t, want)| t.target != ggml_type(want))
        .map(|(t, want)| format!("{}: ours {}, llama-quantize {want}", t.name, t.target))
        .collect();
    assert!(wrong.is_empty(), "{model} {qtype}:\n{}", wrong.join("\n"));
    assert_eq!(
        ours.n_fallback as u64,
        expected["n_fallback"].as_u64().unwrap(),
        "{model} {qtype}: fallback count"
    );
}

fn plan_all_types(model: &str, info: &ModelInfo, tensors: &[TensorDesc], entry: &Value) {
    let names = strings(&entry["tensor_names"]);
    let types = entry["types"].as_object().unwrap();
    assert_eq!(types.len(), FileType::ALL.len(), "{model}: golden types");
    for (qtype, expected) in types {
        let ftype = FileType::parse(qtype).unwrap();
        let ours = plan(info, tensors, ftype, &PlanOptions::default()).unwrap();
        check(model, qtype, &ours, &names, expected);
    }
}

fn from_file(name: &str) -> (ModelInfo, Vec<TensorDesc>) {
    let file = GgufFile::open(testdata(name)).unwrap();
    let info = ModelInfo::from_gguf(&file).unwrap();
    let tensors = file.tensors().iter().map(TensorDesc::from).collect();
    (info, tensors)
}

#[test]
fn smollm2_every_type_matches_llama_quantize() {
    let g = &golden()["smollm2"];
    let (info, tensors) = from_file(g["source"].as_str().unwrap());
    assert_eq!(
        (info.n_layer_all, info.n_head, info.n_head_kv, info.n_expert),
        (30, 9, 3, 0)
    );
    let names = strings(&g["tensor_names"]);
    for (qtype, expected) in g["types"].as_object().unwrap() {
        let ftype = FileType::parse(qtype).unwrap();
        let ours = plan(&info, &tensors, ftype, &PlanOptions::default()).unwrap();
        check("SmolLM2", qtype, &ours, &names, expected);
    }
    // The F16 source itself was made from the Q4_1 file.
    let ours = plan(&info, &tensors, FileType::F16, &PlanOptions::default()).unwrap();
    check("SmolLM2", "F16 (from Q4_1)", &ours, &names, &g["f16"]);
}

#[test]
fn smollm2_q4_k_m_keeps_the_documented_mix() {
    // Spelled out for one mix, so a reader sees what the golden asserts:
    // 576-wide rows cannot hold 256-element blocks and fall back, the tied
    // embeddings take the output's Q8_0, ffn_down (1536-wide) keeps K-quants
    // with Q6_K in the use_more_bits layers.
    let (info, tensors) = from_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = plan(&info, &tensors, FileType::Q4_K_M, &PlanOptions::default()).unwrap();
    let ty = |n: &str| p.get(n).unwrap().target.name();
    assert_eq!(ty("token_embd.weight"), "q8_0");
    assert_eq!(ty("output_norm.weight"), "f32");
    assert_eq!(ty("blk.0.attn_q.weight"), "q5_0");
    assert_eq!(ty("blk.0.attn_v.weight"), "q8_0"); // Q6_K wanted, 576 % 256 != 0
    assert_eq!(ty("blk.4.attn_v.weight"), "q5_0"); // Q4_K wanted
    assert_eq!(ty("blk.0.ffn_down.weight"), "q6_K");
    assert_eq!(ty("blk.4.ffn_down.weight"), "q4_K");
    assert_eq!(ty("blk.5.ffn_down.weight"), "q6_K");
    assert_eq!(p.n_fallback, 180);
}

#[test]
fn tiny_llama32_every_type_matches_llama_quantize() {
    let entry = &golden()["plans"]["tiny-llama32-f32"];
    let (info, tensors) = from_file(entry["file"].as_str().unwrap());
    plan_all_types("tiny-llama32", &info, &tensors, entry);
}

/// Rebuilds a synthetic model from what the golden recorded of it.
fn synthetic(entry: &Value) -> (ModelInfo, Vec<TensorDesc>) {
    let arch = entry["arch"].as_str().unwrap().to_owned();
    let md = &entry["metadata"];
    let u = |k: &str| md.get(k).and_then(Value::as_u64).map(|v| v as u32);
    let n_head = u("attention.head_count").unwrap_or(0);
    let info = ModelInfo {
        arch,
        n_layer_all: u("block_count").unwrap(),
        n_layer_nextn: 0,
        n_head,
        n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
        n_expert: u("expert_count").unwrap_or(0),
    };
    let tensors = entry["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| TensorDesc {
            name: t[0].as_str().unwrap().to_owned(),
            dims: t[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect(),
            ggml_type: ggml_type(t[2].as_str().unwrap()),
        })
        .collect();
    (info, tensors)
}

#[test]
fn synthetic_shapes_every_type_matches_llama_quantize() {
    let plans = golden()["plans"].as_object().unwrap();
    let mut seen = Vec::new();
    for (model, entry) in plans.iter().filter(|(_, e)| e.get("arch").is_some()) {
        let (info, tensors) = synthetic(entry);
        plan_all_types(model, &info, &tensors, entry);
        seen.push(model.as_str());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "falcon",
            "llama-80-blocks",
            "llama-moe-8",
            "llama-untied-gqa8"
        ]
    );
}

#[test]
fn synthetic_models_reach_the_special_rules() {
    // Guards the golden's coverage: each synthetic model exercises the rule it
    // was made for, as llama-quantize applied it.
    let plans = &golden()["plans"];
    let ty = |model: &str, qtype: &str, tensor: &str| -> String {
        let names = strings(&plans[model]["tensor_names"]);
        let i = names.iter().position(|n| n == tensor).unwrap();
        strings(&plans[model]["types"][qtype]["tensor_types"])[i].clone()
    };
    // 70B: attn_v wanted Q4_K (8-way GQA) and got Q5_K.
    assert_eq!(
        ty("llama-80-blocks", "Q2_K", "blk.40.attn_v.weight"),
        "q5_K"
    );
    // 8 experts: attn_v/attn_k at Q8_0, attn_output Q5_K.
    assert_eq!(ty("llama-moe-8", "Q4_K_M", "blk.1.attn_k.weight"), "q8_0");
    assert_eq!(
        ty("llama-moe-8", "Q3_K_M", "blk.2.attn_output.weight"),
        "q5_K"
    );
    // falcon: output at Q8_0, fused QKV takes the attn_v rules.
    assert_eq!(ty("falcon", "Q4_K_M", "output.weight"), "q8_0");
    assert_eq!(ty("falcon", "Q3_K_M", "blk.3.attn_qkv.weight"), "q4_K");
    // Untied: output Q6_K, token_embd follows the mix; odd rows fall back.
    assert_eq!(ty("llama-untied-gqa8", "Q4_0", "output.weight"), "q6_K");
    assert_eq!(ty("llama-untied-gqa8", "Q4_0", "token_embd.weight"), "q4_0");
    assert_eq!(
        ty("llama-untied-gqa8", "Q4_K_M", "blk.0.ffn_gate_shexp.weight"),
        "q5_0"
    );
    assert_eq!(
        ty("llama-untied-gqa8", "Q4_0", "blk.0.ffn_up_shexp.weight"),
        "f16"
    );
}

#[test]
fn pure_and_leave_output_tensor_match_llama_quantize() {
    let entry = &golden()["plans"]["llama-untied-gqa8"];
    let (info, tensors) = synthetic(entry);
    let names = strings(&entry["tensor_names"]);
    let switches = [
        (
            "--pure",
            PlanOptions {
                pure: true,
                ..PlanOptions::default()
            },
        ),
        (
            "--leave-output-tensor",
            PlanOptions {
                leave_output_tensor: true,
                ..PlanOptions::default()
            },
        ),
    ];
    for (flag, opts) in switches {
        let runs = entry[flag].as_object().unwrap();
        assert_eq!(runs.len(), 2, "{flag}");
        for (qtype, expected) in runs {
            let ours = plan(&info, &tensors, FileType::parse(qtype).unwrap(), &opts).unwrap();
            check(
                "llama-untied-gqa8",
                &format!("{qtype} {flag}"),
                &ours,
                &names,
                expected,
            );
        }
    }
}
