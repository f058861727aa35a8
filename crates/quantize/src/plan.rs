//! Which type each tensor gets: a port of llama.cpp's `src/llama-quant.cpp`
//! (`tensor_allows_quantization`, `llama_tensor_get_type`,
//! `llama_tensor_get_type_impl` and `tensor_type_fallback`), restricted to the
//! mixes of [`FileType`] and to quantizing without an importance matrix.
//!
//! The rules depend on the order tensors are visited in (the `_M` mixes count
//! `attn_v` tensors as they go), so the plan visits them in the order
//! llama-quantize writes them: tensors outside a block first, then block by
//! block, each group sorted by name (`llama_model_loader::weights_map`).
//!
//! Llama 3.2 Vision (`general.architecture = "mllama"`, ollama's unified
//! layout) adds two things llama.cpp's rules do not cover:
//! - the text model's cross-attention layers: their projections
//!   (`blk.N.cross_attn_{q,k,v,o}_proj.weight`) match none of the rules'
//!   name patterns, so they take the mix's default type (with the row-length
//!   fallback); their q/k norms and 1-element gates stay as they are, as
//!   every norm and 1-D tensor does. `attn_v` is counted by the substring
//!   `attn_v.weight`, which `cross_attn_v_proj.weight` does not contain, so
//!   the `_M` mixes pick their layers among the self-attention layers only.
//! - the vision tower and projector (`v.*`, `mm.*`), which never take the
//!   text mix nor enter its counters (`v.blk.N.attn_v.weight` does contain
//!   `attn_v.weight`): every matrix is converted to the
//!   [`PlanOptions::vision_type`], falling back to F16 when its rows do not
//!   hold whole blocks (the patch embedding's rows of 14 under Q8_0); the
//!   four position tables, and every 1-D tensor, bias, norm and gate, stay
//!   as they are.

use edgellama_gguf::names::TensorKind;
use edgellama_gguf::{ArrayValues, GgmlType, GgufFile, MetadataValue, TensorInfo};

use crate::error::QuantizeError;
use crate::ftype::{FileType, VisionType};

/// The hyperparameters the rules look at, from the model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`, e.g. `llama`.
    pub arch: String,
    /// `{arch}.block_count`: every block, including next-token-prediction ones.
    pub n_layer_all: u32,
    /// `{arch}.nextn_predict_layers` (0 when absent).
    pub n_layer_nextn: u32,
    /// `{arch}.attention.head_count` of the first layer (0 when absent).
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` of the first layer (`n_head` when absent).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
}

/// The most blocks llama.cpp accepts (`LLAMA_MAX_LAYERS`).
const MAX_LAYERS: u32 = 512;

impl ModelInfo {
    /// Reads the hyperparameters as llama.cpp's loader does. Fails on files
    /// that are not models: no architecture, no block count, or no tensors.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelInfo, QuantizeError> {
        let not_a_model = |reason: String| QuantizeError::NotAModel { reason };
        let arch = file
            .get_str_opt("general.architecture")
            .ok_or_else(|| not_a_model("general.architecture is missing".into()))?
            .to_owned();
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let block_count = key("block_count");
        let n_layer_all = file.get_u32_opt(&block_count).ok_or_else(|| {
            not_a_model(format!(
                "{block_count} is missing or not an integer (a vocabulary-only file?)"
            ))
        })?;
        if n_layer_all == 0 || n_layer_all > MAX_LAYERS {
            return Err(not_a_model(format!(
                "{block_count} is {n_layer_all}, expected 1 to {MAX_LAYERS}"
            )));
        }
        if file.tensors().is_empty() {
            return Err(not_a_model("it holds no tensors".into()));
        }
        let n_layer_nextn = optional_u32(file, &key("nextn_predict_layers"))?.unwrap_or(0);
        if n_layer_nextn > n_layer_all {
            return Err(not_a_model(format!(
                "{arch}.nextn_predict_layers ({n_layer_nextn}) exceeds the block count ({n_layer_all})"
            )));
        }
        let n_head = first_layer_u32(file, &key("attention.head_count"))?.unwrap_or(0);
        let n_head_kv = first_layer_u32(file, &key("attention.head_count_kv"))?.unwrap_or(n_head);
        let n_expert = optional_u32(file, &key("expert_count"))?.unwrap_or(0);
        Ok(ModelInfo {
            arch,
            n_layer_all,
            n_layer_nextn,
            n_head,
            n_head_kv,
            n_expert,
        })
    }

    /// Query heads per key/value head in the first layer (`llama_hparams::n_gqa`).
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Blocks without the next-token-prediction ones (`llama_hparams::n_layer`).
    fn n_layer(&self) -> u32 {
        self.n_layer_all.saturating_sub(self.n_layer_nextn)
    }

    /// Whether llama.cpp classifies the model as `LLM_TYPE_70B`, the one model
    /// size the rules single out (`load_arch_hparams` of each architecture).
    pub fn is_70b(&self) -> bool {
        let n_layer = self.n_layer();
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => n_layer == 80,
            "jais2" => n_layer == 68,
            _ => false,
        }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

fn optional_u32(file: &GgufFile, key: &str) -> Result<Option<u32>, QuantizeError> {
    match file.get(key) {
        None => Ok(None),
        Some(_) => Ok(Some(file.get_u32(key)?)),
    }
}

/// A per-layer key may be one number or an array with one per layer; the
/// rules only ever read the first layer's value.
fn first_layer_u32(file: &GgufFile, key: &str) -> Result<Option<u32>, QuantizeError> {
    match file.get(key) {
        None => Ok(None),
        Some(MetadataValue::Array(a)) => {
            let first = match a.values() {
                ArrayValues::U32(v) => v.first().copied(),
                ArrayValues::I32(v) => v.first().and_then(|&x| u32::try_from(x).ok()),
                _ => None,
            };
            first.map(Some).ok_or_else(|| QuantizeError::NotAModel {
                reason: format!("{key} is not a non-empty array of non-negative 32-bit integers"),
            })
        }
        Some(_) => Ok(Some(file.get_u32(key)?)),
    }
}

/// A tensor as the planner sees it: name, shape (ggml order) and stored type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl From<&TensorInfo> for TensorDesc {
    fn from(t: &TensorInfo) -> TensorDesc {
        TensorDesc {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        }
    }
}

/// llama-quantize's switches that change the plan, and the vision tower's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--pure`: every quantizable tensor of the text model gets the default
    /// type of the mix (row-length fallbacks still apply).
    pub pure: bool,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
    /// The type of a Llama 3.2 Vision model's vision tower and projector
    /// matrices, whatever the mix; unused for text-only architectures.
    pub vision_type: VisionType,
}

/// One tensor of the output, in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    /// Shape as written: the input's dimensions without trailing ones
    /// (`ggml_n_dims`), so `[576, 1]` becomes `[576]`.
    pub dims: Vec<u64>,
    pub source: GgmlType,
    pub target: GgmlType,
    /// The type the rules wanted when the row length did not fit its blocks
    /// and `target` is the fallback (`tensor_type_fallback`).
    pub fallback_from: Option<GgmlType>,
}

impl TensorPlan {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Whether the data must be converted (otherwise it is copied as is).
    pub fn converts(&self) -> bool {
        self.source != self.target
    }
}

/// The type of every tensor of a model under one mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ftype: FileType,
    /// In the order llama-quantize writes them.
    pub tensors: Vec<TensorPlan>,
    /// How many tensors fell back to another type because of their row length
    /// (llama-quantize's "N of M tensor(s) required fallback quantization").
    pub n_fallback: usize,
}

impl Plan {
    pub fn get(&self, name: &str) -> Option<&TensorPlan> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Broad tensor roles (`enum tensor_category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Category::TokenEmbd;
        }
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(pat, _)| name.contains(pat))
            .map_or(Category::Other, |&(_, c)| c)
    }

    /// `attn_v`-like tensors, the most sensitive to quantization. This is
    /// also why llama.cpp's separate `attn_qkv` rule never fires: fused QKV
    /// tensors take the `attn_v` rules.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Which model of a file a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The language model, planned by llama.cpp's rules.
    Text(Category),
    /// The vision tower or projector of a Llama 3.2 Vision (mllama) model.
    Vision,
}

impl Part {
    fn of(arch: &str, name: &str) -> Part {
        if arch == "mllama" && (name.starts_with("v.") || name.starts_with("mm.")) {
            Part::Vision
        } else {
            Part::Text(Category::of(name))
        }
    }
}

/// The vision tower's position tables, looked up by index rather than
/// multiplied, and added to the activations as they are: kept at full
/// precision. (llama.cpp's `.position_embd` fragment catches only the first.)
fn is_position_table(name: &str) -> bool {
    use TensorKind as K;
    matches!(
        TensorKind::parse(name),
        Some((
            K::VisPositionEmbd
                | K::VisTilePositionEmbd
                | K::VisPreTilePositionEmbd
                | K::VisPostTilePositionEmbd,
            _,
            "weight"
        ))
    )
}

/// Name fragments of tensors that stay as they are whatever the mix
/// (`tensor_allows_quantization`): small, or not used in matrix products.
const NEVER_QUANTIZED: [&str; 35] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// More fragments that only `glm5-next` keeps unquantized.
const NEVER_QUANTIZED_GLM5_NEXT: [&str; 14] = [
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

fn allows_quantization(arch: &str, name: &str, n_dims: usize, opts: &PlanOptions) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    if opts.leave_output_tensor && name == "output.weight" {
        return false;
    }
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    if NEVER_QUANTIZED.iter().any(|f| name.contains(f)) {
        return false;
    }
    !(arch == "glm5-next" && NEVER_QUANTIZED_GLM5_NEXT.iter().any(|f| name.contains(f)))
}

/// The layer number of `blk.N.…` as C's `sscanf(name, "blk.%d.", &n)` reads
/// it (leading white space and a sign accepted); `None` when it matches nothing.
fn scan_layer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    // Absurdly long numbers saturate (C leaves them undefined).
    let magnitude: i64 = digits[..n].parse().unwrap_or(i64::MAX);
    let value = if negative { -magnitude } else { magnitude };
    Some(value.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
}

/// The order llama-quantize visits and writes tensors in.
fn write_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = scan_layer(a).unwrap_or(-1);
    let lb = scan_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

/// `ggml_n_dims`: trailing dimensions of 1 do not count.
fn trimmed_dims(dims: &[u64]) -> Vec<u64> {
    let n = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    let mut out: Vec<u64> = dims.iter().copied().take(n).collect();
    if out.is_empty() {
        out.push(1);
    }
    out
}

/// Counters that the rules advance as they visit tensors (`quantize_state_impl`).
struct State<'m> {
    model: &'m ModelInfo,
    ftype: FileType,
    has_tied_embeddings: bool,
    n_attention_wv: i32,
    i_attention_wv: i32,
    n_layer_ffn: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    n_fallback: usize,
}

/// `i_layer` is among the layers that get more bits in the `_M` mixes: the
/// first and last eighth, and every third layer in between.
fn use_more_bits(i_layer: i32, n_layers: i32) -> bool {
    let (i, n) = (i64::from(i_layer), i64::from(n_layers));
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl State<'_> {
    /// The layer a feed-forward tensor belongs to: its visiting index for
    /// dense models; for mixture-of-experts models, whose expert tensors are
    /// not visited one per layer, the number in its name.
    fn layer_info(&self, counter: i32, name: &str) -> Result<(i32, i32), QuantizeError> {
        let n_layer = self.n_layer_ffn;
        if self.model.n_expert <= 1 {
            return Ok((counter, n_layer));
        }
        match scan_layer(name) {
            Some(i) if (0..n_layer).contains(&i) => Ok((i, n_layer)),
            _ => Err(QuantizeError::BadLayer {
                tensor: name.to_owned(),
                n_layer: self.model.n_layer_all,
            }),
        }
    }

    /// `llama_tensor_get_type_impl` for the supported mixes.
    fn rules(
        &mut self,
        mut new_type: GgmlType,
        name: &str,
        row_len: u64,
        category: Category,
    ) -> Result<GgmlType, QuantizeError> {
        use FileType as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let falcon = self.model.is_falcon();
        let n_expert = self.model.n_expert;

        if category == Category::Output
            || (self.has_tied_embeddings && category == Category::TokenEmbd)
        {
            // The output projection (or the embeddings that double as it) is
            // the most sensitive matrix: Q6_K unless the mix is Q8_0 already,
            // Q8_0 when K-quant blocks do not fit the rows.
            if falcon || !row_len.is_multiple_of(new_type.block_size() as u64) {
                new_type = T::Q8_0;
            } else if new_type != T::Q8_0 {
                new_type = T::Q6_K;
            }
        } else if category == Category::TokenEmbd {
            // Only the IQ and ternary mixes, not supported here, change it.
        } else if category.is_attn_v() {
            let umb = use_more_bits(self.i_attention_wv, self.n_attention_wv);
            match ftype {
                F::Q2_K => {
                    new_type = if self.model.n_gqa() >= 4 {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_M => {
                    new_type = if self.i_attention_wv < 2 {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    }
                }
                F::Q3_K_L => new_type = T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if umb => new_type = T::Q6_K,
                F::Q4_K_S if self.i_attention_wv < 4 => new_type = T::Q5_K,
                _ => {}
            }
            // attn_v of a 70B model is 8x smaller than attn_q (grouped-query
            // attention), so more bits there cost little.
            if self.model.is_70b() && matches!(new_type, T::Q3_K | T::Q4_K) {
                new_type = T::Q5_K;
            }
            if n_expert == 8 {
                new_type = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if category == Category::AttnK {
            if n_expert == 8 {
                new_type = T::Q8_0;
            }
        } else if category == Category::AttnQ {
            // Only the IQ3 mixes change it.
        } else if category == Category::FfnDown {
            let (i_layer, n_layer) = self.layer_info(self.i_ffn_down, name)?;
            let umb = use_more_bits(i_layer, n_layer);
            match ftype {
                F::Q2_K => new_type = T::Q3_K,
                F::Q3_K_M => {
                    new_type = if i_layer < n_layer / 16 {
                        T::Q5_K
                    } else if !falcon || umb {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_L => new_type = if falcon { T::Q4_K } else { T::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        new_type = if i_layer < n_layer / 16 {
                            T::Q6_K
                        } else if umb {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if umb {
                        new_type = T::Q6_K;
                    }
                }
                F::Q5_K_M if umb => new_type = T::Q6_K,
                F::Q4_K_S if !falcon && i_layer < n_layer / 8 => new_type = T::Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if category == Category::AttnOutput {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                    ) {
                        new_type = T::Q5_K;
                    }
                } else {
                    match ftype {
                        F::Q2_K => new_type = T::Q3_K,
                        F::Q3_K_M => new_type = T::Q4_K,
                        F::Q3_K_L => new_type = T::Q5_K,
                        _ => {}
                    }
                }
            } else if ftype == F::Q3_K_L {
                new_type = T::Q4_K;
            }
        } else if category == Category::FfnGate {
            // Only IQ3_XS changes it, but the layer is still checked.
            self.layer_info(self.i_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if category == Category::FfnUp {
            self.layer_info(self.i_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }

    /// A vision tower or projector tensor (see the module's notes): matrices
    /// at `vision`, or F16 when their rows do not hold its blocks; the rest
    /// (position tables, 1-D tensors, biases, norms, gates) as they are.
    fn vision(
        &mut self,
        name: &str,
        dims: &[u64],
        source: GgmlType,
        vision: VisionType,
    ) -> (GgmlType, Option<GgmlType>) {
        let matrix = dims.len() >= 2 && name.ends_with("weight") && !is_position_table(name);
        if !matrix {
            return (source, None);
        }
        let wanted = vision.ggml_type();
        if dims[0].is_multiple_of(wanted.block_size() as u64) {
            (wanted, None)
        } else {
            self.n_fallback += 1;
            (GgmlType::F16, Some(wanted))
        }
    }

    /// `tensor_type_fallback`: a type whose blocks divide the row length.
    fn fallback(
        &mut self,
        name: &str,
        row_len: u64,
        target: GgmlType,
    ) -> Result<(GgmlType, Option<GgmlType>), QuantizeError> {
        let block = target.block_size() as u64;
        if row_len.is_multiple_of(block) {
            return Ok((target, None));
        }
        self.n_fallback += 1;
        let mut fallback = match target {
            GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            // A 32-block type has no smaller block to demote to; F16 below.
            t if block <= 32 => t,
            t => {
                return Err(QuantizeError::NoFallback {
                    tensor: name.to_owned(),
                    ty: t,
                })
            }
        };
        if !row_len.is_multiple_of(fallback.block_size() as u64) {
            fallback = GgmlType::F16;
        }
        Ok((fallback, Some(target)))
    }
}

/// Chooses the type of every tensor of `tensors` under `ftype`, exactly as
/// llama-quantize does without an importance matrix or type overrides, and
/// returns them in llama-quantize's write order. A Llama 3.2 Vision model's
/// vision tower and projector follow `opts.vision_type` instead.
pub fn plan(
    model: &ModelInfo,
    tensors: &[TensorDesc],
    ftype: FileType,
    opts: &PlanOptions,
) -> Result<Plan, QuantizeError> {
    let mut order: Vec<&TensorDesc> = tensors.iter().collect();
    order.sort_by(|a, b| write_order(&a.name, &b.name));

    let parts: Vec<Part> = order
        .iter()
        .map(|t| Part::of(&model.arch, &t.name))
        .collect();
    let n_attention_wv = parts
        .iter()
        .filter(|p| matches!(p, Part::Text(c) if c.is_attn_v()))
        .count();
    let mut st = State {
        model,
        ftype,
        has_tied_embeddings: !parts.contains(&Part::Text(Category::Output)),
        n_attention_wv: n_attention_wv as i32,
        i_attention_wv: 0,
        n_layer_ffn: i32::try_from(model.n_layer_all).unwrap_or(i32::MAX),
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        n_fallback: 0,
    };

    let mut out = Vec::with_capacity(order.len());
    for (t, &part) in order.into_iter().zip(&parts) {
        let dims = trimmed_dims(&t.dims);
        let row_len = dims[0];
        let mut target = t.ggml_type;
        let mut fallback_from = None;
        match part {
            Part::Vision => {
                (target, fallback_from) = st.vision(&t.name, &dims, t.ggml_type, opts.vision_type);
            }
            Part::Text(category) if allows_quantization(&model.arch, &t.name, dims.len(), opts) => {
                target = ftype.default_type();
                if ftype.is_quantized() {
                    if !opts.pure {
                        target = st.rules(target, &t.name, row_len, category)?;
                    }
                    (target, fallback_from) = st.fallback(&t.name, row_len, target)?;
                }
            }
            Part::Text(_) => {}
        }
        out.push(TensorPlan {
            name: t.name.clone(),
            dims,
            source: t.ggml_type,
            target,
            fallback_from,
        });
    }
    Ok(Plan {
        ftype,
        tensors: out,
        n_fallback: st.n_fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_layer_reads_like_sscanf() {
        assert_eq!(scan_layer("blk.12.attn_v.weight"), Some(12));
        assert_eq!(scan_layer("blk.0."), Some(0));
        assert_eq!(scan_layer("blk. 7.x"), Some(7));
        assert_eq!(scan_layer("blk.-3.x"), Some(-3));
        assert_eq!(scan_layer("blk.3x"), Some(3));
        assert_eq!(scan_layer("blk.x.3"), None);
        assert_eq!(scan_layer("token_embd.weight"), None);
        assert_eq!(scan_layer("v.blk.3.attn_q.weight"), None);
        assert_eq!(scan_layer("blk.99999999999999999999999.x"), Some(i32::MAX));
    }

    #[test]
    fn write_order_puts_globals_first_then_blocks_numerically() {
        let mut names = vec![
            "blk.10.attn_q.weight",
            "output.weight",
            "blk.2.ffn_up.weight",
            "blk.2.attn_k.weight",
            "token_embd.weight",
            "blk.1.attn_q.weight",
            "output_norm.weight",
        ];
        names.sort_by(|a, b| write_order(a, b));
        assert_eq!(
            names,
            [
                "output.weight",
                "output_norm.weight",
                "token_embd.weight",
                "blk.1.attn_q.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight",
            ]
        );
    }

    #[test]
    fn use_more_bits_matches_the_first_layers_of_a_32_layer_model() {
        // 32 layers: 0..4 and 28..32, then every third layer from 6.
        let picked: Vec<i32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn trailing_unit_dims_are_dropped() {
        assert_eq!(trimmed_dims(&[576, 1]), [576]);
        assert_eq!(trimmed_dims(&[576, 1, 4]), [576, 1, 4]);
        assert_eq!(trimmed_dims(&[1, 1]), [1]);
        assert_eq!(trimmed_dims(&[256, 64, 1, 1]), [256, 64]);
    }

    #[test]
    fn categories_follow_llama_cpp_substring_order() {
        assert_eq!(Category::of("output.weight"), Category::Output);
        assert_eq!(Category::of("blk.0.attn_kv_b.weight"), Category::AttnKvB);
        assert_eq!(Category::of("blk.0.attn_k.weight"), Category::AttnK);
        assert_eq!(
            Category::of("blk.0.ffn_down_exps.weight"),
            Category::FfnDown
        );
        assert_eq!(Category::of("blk.0.ffn_gate_inp.weight"), Category::FfnGate);
        assert_eq!(Category::of("blk.0.attn_norm.weight"), Category::Other);
    }

    #[test]
    fn only_mllama_files_have_a_vision_part() {
        assert_eq!(Part::of("mllama", "v.blk.0.attn_v.weight"), Part::Vision);
        assert_eq!(
            Part::of("mllama", "v.global.blk.1.ffn_down.weight"),
            Part::Vision
        );
        assert_eq!(Part::of("mllama", "mm.0.weight"), Part::Vision);
        assert_eq!(
            Part::of("mllama", "blk.1.cross_attn_v_proj.weight"),
            Part::Text(Category::Other)
        );
        assert_eq!(
            Part::of("mllama", "blk.2.attn_v.weight"),
            Part::Text(Category::AttnV)
        );
        assert_eq!(
            Part::of("llama", "v.blk.0.attn_v.weight"),
            Part::Text(Category::AttnV)
        );
    }

    #[test]
    fn position_tables_are_the_four_weights() {
        for name in [
            "v.position_embd.weight",
            "v.tile_position_embd.weight",
            "v.pre_tile_position_embd.weight",
            "v.post_tile_position_embd.weight",
        ] {
            assert!(is_position_table(name), "{name}");
        }
        for name in [
            "v.position_embd.gate",
            "v.patch_embd.weight",
            "v.class_embd",
            "token_embd.weight",
        ] {
            assert!(!is_position_table(name), "{name}");
        }
    }
}
