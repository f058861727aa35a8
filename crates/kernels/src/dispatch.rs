//! The kernel table: one function per (type, operation), chosen once per
//! process from the CPU's features, like the type traits of ggml-cpu.
//!
//! SIMD tables start from the scalar table and replace the entries they
//! speed up, so a type without a SIMD kernel still has the scalar one.

use std::sync::OnceLock;

use edgellama_gguf::GgmlType;

/// Dequantizes a row: `src` holds exactly the blocks of `dst.len()` elements.
pub type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);

/// Quantizes a row: `src.len()` is a multiple of the block size and `dst`
/// holds exactly its blocks.
pub type QuantizeFn = fn(src: &[f32], dst: &mut [u8]);

/// Dot product of `n` elements: `w` is exactly a row of `n` elements of the
/// weight type, `a` exactly a row of `n` elements of its `vec_dot_type`.
pub type VecDotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// One weight row against a batch of activation rows, for prompt
/// processing: `a` holds `out.len()` rows back to back, each exactly a row
/// of `n` elements of the weight type's `vec_dot_type`, and
/// `out[c] = vec_dot(n, w, row c)`.
///
/// A batched kernel unpacks each weight block once for all the rows (up to
/// four at a time) and gives the same bits as the table's [`VecDotFn`] row by
/// row, so a prompt processed in batches matches one processed token by
/// token. Callers loop over weight rows and pass the tokens of a batch;
/// the weight row then stays in L1 while the activations stream.
pub type VecDotBatchFn = fn(n: usize, w: &[u8], a: &[u8], out: &mut [f32]);

/// Every weight row against every activation row, for prompt processing:
/// `w` holds weight rows of `n` elements back to back, `a` activation rows
/// of `n` elements of the `vec_dot_type`, and `out` is row-major, one row
/// per weight row: `out[r * cols + c] = vec_dot(n, w row r, a row c)` with
/// `cols` the number of activation rows in `a`.
///
/// A tiled kernel computes small blocks of (weight row, activation row)
/// pairs at once in registers, so each weight block is unpacked and each
/// activation block loaded once per block of pairs, and gives the same bits
/// as the table's [`VecDotFn`] pair by pair.
pub type VecDotTileFn = fn(n: usize, w: &[u8], a: &[u8], out: &mut [f32]);

/// Widens a row of f16 bits: `dst[i] = src[i]`.
pub type F16ToF32Fn = fn(src: &[u16], dst: &mut [f32]);

/// Narrows a row to f16 bits, rounding to nearest-even: `dst[i] = src[i]`.
pub type F32ToF16Fn = fn(src: &[f32], dst: &mut [u16]);

/// `sum(a[i] * b[i])` with `b` a row of f16 bits (a query against a cached key).
pub type DotF32F16Fn = fn(a: &[f32], b: &[u16]) -> f32;

/// `y[i] += alpha * x[i]` with `x` a row of f16 bits (a weighted cached value).
pub type AxpyF16Fn = fn(y: &mut [f32], alpha: f32, x: &[u16]);

/// Scores of a block of queries against a tile of keys held transposed:
/// `s[i * nk + j] = scale * sum_d q[i * hd + d] * kt[d * nk + j]` for the
/// `q.len() / hd` query rows. Each score's arithmetic depends on its query
/// and key alone, not on the block they came in.
pub type QkTileFn = fn(q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]);

/// Weighted sums of a tile of value rows into a block of outputs:
/// `out[i * hd + d] += p[i * nk + j] * v[j * hd + d]`, `j` in order, for
/// the `p.len() / nk` query rows. Each output's arithmetic depends on its
/// own weights alone.
pub type PvTileFn = fn(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]);

/// One head's softmax attention for a block of query rows over keys held
/// in tiles ([`crate::scalar::attn::attend_block`] says the layout and the
/// contract): the dense route of the vision tower and of long
/// cross-attention, where no bit-for-bit rule between batch sizes applies.
pub type AttendBlockFn = fn(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    v: &[f32],
    v_stride: usize,
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
);

/// [`AttendBlockFn`] with bfloat16 products
/// ([`crate::scalar::attn::attend_block_bf16`] says the layouts).
pub type AttendBlockBf16Fn =
    fn(q: &[f32], hd: usize, kp: &[u16], vp: &[u16], n_keys: usize, scale: f32, out: &mut [f32]);

/// The kernels of one tensor type.
#[derive(Clone, Copy, Debug)]
pub struct TypeKernels {
    pub ty: GgmlType,
    /// The format activations are quantized to for [`TypeKernels::vec_dot`].
    pub vec_dot_type: GgmlType,
    pub dequantize: DequantizeFn,
    /// Quantizes weights: ggml's reference quantizer, what `llama-quantize` writes.
    pub quantize: QuantizeFn,
    /// Quantizes activations to this type before a product, as llama.cpp's
    /// `from_float` for this CPU does. Its SIMD paths round `q8_0`/`q8_1`
    /// differently from the reference (`127 / amax`, ties to even), and
    /// following them keeps perplexity within llama.cpp's own noise.
    pub quantize_act: QuantizeFn,
    /// `None` for activation-only formats (`q8_1`, `q8_K`).
    pub vec_dot: Option<VecDotFn>,
}

/// `sum(a[i] * b[i])` over two rows of f16 bits (an F16 query against a cached key).
pub type DotF16Fn = fn(a: &[u16], b: &[u16]) -> f32;

/// `y[i] = f16(y[i] + x[i] * v)`: an F16 accumulator plus a weighted f16 row.
pub type MadF16Fn = fn(y: &mut [u16], x: &[u16], v: f32);

/// `y[i] = f16(y[i] * v)`.
pub type ScaleF16Fn = fn(y: &mut [u16], v: f32);

/// `gate[i] = silu(gate[i]) * up[i]`.
pub type SwigluFn = fn(gate: &mut [f32], up: &[f32]);

/// `x[i] = exp(x[i] - max)`, returning the sum (softmax numerators).
pub type ExpSumFn = fn(x: &mut [f32], max: f32) -> f64;

/// Moves a `rows x cols` block of `src` (rows `ld` apart) to `dst`
/// transposed: `dst[c * rows + r] = src[r * ld + c]`.
pub type TransposeFn = fn(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]);

/// Element-wise float ops whose `exp` approximation follows the matching
/// llama.cpp build's `ggml_v_expf`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FloatOps {
    pub swiglu: SwigluFn,
    pub exp_sum: ExpSumFn,
    pub transpose: TransposeFn,
}

impl FloatOps {
    pub(crate) const SCALAR: FloatOps = FloatOps {
        swiglu: crate::ops::swiglu_inplace,
        exp_sum: crate::ops::exp_sum_ggml,
        transpose: crate::ops::transpose,
    };
}

/// The kernels on rows of f16 bits that attention uses on the KV cache.
/// Each processes the `min` of its slices' lengths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F16RowKernels {
    pub f16_to_f32: F16ToF32Fn,
    pub f32_to_f16: F32ToF16Fn,
    pub dot_f32_f16: DotF32F16Fn,
    pub axpy_f16: AxpyF16Fn,
    /// The f32 route's tiles: scores and weighted values of several queries
    /// at once against keys and values widened once.
    pub qk_tile: QkTileFn,
    pub pv_tile: PvTileFn,
    /// The dense route's flash-style block (online softmax over key tiles).
    pub attend_block: AttendBlockFn,
    /// Only where the CPU multiplies bfloat16 pairs natively.
    pub attend_block_bf16: Option<AttendBlockBf16Fn>,
    /// llama.cpp's F16 attention route (short batches, decoding): these
    /// follow `ggml_vec_dot_f16`, `ggml_vec_mad_f16` and `ggml_vec_scale_f16`
    /// of the matching llama.cpp build (portable C for the scalar table).
    pub dot_f16: DotF16Fn,
    pub mad_f16: MadF16Fn,
    pub scale_f16: ScaleF16Fn,
}

impl F16RowKernels {
    pub(crate) const SCALAR: F16RowKernels = F16RowKernels {
        f16_to_f32: crate::scalar::attn::f16_to_f32_row,
        f32_to_f16: crate::scalar::attn::f32_to_f16_row,
        dot_f32_f16: crate::scalar::attn::dot_f32_f16,
        axpy_f16: crate::scalar::attn::axpy_f16,
        qk_tile: crate::scalar::attn::qk_tile,
        pv_tile: crate::scalar::attn::pv_tile,
        attend_block: crate::scalar::attn::attend_block,
        attend_block_bf16: None,
        dot_f16: crate::ops::dot_f16_ggml,
        mad_f16: crate::ops::mad_f16,
        scale_f16: crate::ops::scale_f16,
    };
}

/// ggml type numbers run up to `BF16 = 30`.
const TABLE_LEN: usize = 31;

/// A complete set of kernels for this CPU.
///
/// The function pointers skip validation so they can sit in hot loops: call
/// them only with lengths that the checked functions of the crate root
/// ([`crate::vec_dot`], [`crate::quantize_row`], [`crate::dequantize_row`])
/// would accept. Out of contract they do not panic or read out of bounds:
/// they process the whole blocks present in every slice and leave the rest.
#[derive(Clone, Debug)]
pub struct Kernels {
    name: &'static str,
    by_type: [Option<TypeKernels>; TABLE_LEN],
    batch: [Option<VecDotBatchFn>; TABLE_LEN],
    tile: [Option<VecDotTileFn>; TABLE_LEN],
    /// Weight rows a tiled kernel works through together.
    tile_rows: [u8; TABLE_LEN],
    f16_rows: F16RowKernels,
    float_ops: FloatOps,
}

impl Kernels {
    pub(crate) fn new(name: &'static str, entries: &[TypeKernels]) -> Kernels {
        Kernels {
            name,
            by_type: [None; TABLE_LEN],
            batch: [None; TABLE_LEN],
            tile: [None; TABLE_LEN],
            tile_rows: [2; TABLE_LEN],
            f16_rows: F16RowKernels::SCALAR,
            float_ops: FloatOps::SCALAR,
        }
        .with(name, entries)
    }

    /// A copy of this table under a new name, with `entries` replacing those
    /// of the same types.
    pub(crate) fn with(&self, name: &'static str, entries: &[TypeKernels]) -> Kernels {
        let mut k = self.clone();
        k.name = name;
        for e in entries {
            if let Some(slot) = k.by_type.get_mut(e.ty as usize) {
                *slot = Some(*e);
            }
        }
        k
    }

    /// This table with batched dot products for the given types. Each must
    /// agree bit for bit with the table's `vec_dot` of its type.
    pub(crate) fn with_batch(mut self, entries: &[(GgmlType, VecDotBatchFn)]) -> Kernels {
        for &(t, f) in entries {
            if let Some(slot) = self.batch.get_mut(t as usize) {
                *slot = Some(f);
            }
        }
        self
    }

    /// This table with tiled dot products for the given types. Each must
    /// agree bit for bit with the table's `vec_dot` of its type.
    pub(crate) fn with_tile(mut self, entries: &[(GgmlType, VecDotTileFn)]) -> Kernels {
        for &(t, f) in entries {
            if let Some(slot) = self.tile.get_mut(t as usize) {
                *slot = Some(f);
            }
        }
        self
    }

    /// This table with its f16 row kernels replaced.
    pub(crate) fn with_float_ops(mut self, float_ops: FloatOps) -> Kernels {
        self.float_ops = float_ops;
        self
    }

    pub(crate) fn with_f16_rows(mut self, f16_rows: F16RowKernels) -> Kernels {
        self.f16_rows = f16_rows;
        self
    }

    /// This table with other attention tiles.
    pub(crate) fn with_attention_tiles(mut self, qk: QkTileFn, pv: PvTileFn) -> Kernels {
        self.f16_rows.qk_tile = qk;
        self.f16_rows.pv_tile = pv;
        self
    }

    /// This table with another dense attention block.
    pub(crate) fn with_attend_block(mut self, f: AttendBlockFn) -> Kernels {
        self.f16_rows.attend_block = f;
        self
    }

    /// This table with a native bfloat16 dense attention block.
    pub(crate) fn with_attend_block_bf16(mut self, f: AttendBlockBf16Fn) -> Kernels {
        self.f16_rows.attend_block_bf16 = Some(f);
        self
    }

    /// Which table this is: `"scalar"`, or the ISA of a SIMD table
    /// (`"x86-avx2"`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The kernels for `t`, or `None` if this build has none.
    #[inline]
    pub fn get(&self, t: GgmlType) -> Option<&TypeKernels> {
        self.by_type.get(t as usize).and_then(Option::as_ref)
    }

    #[inline]
    pub fn dequantize(&self, t: GgmlType) -> Option<DequantizeFn> {
        self.get(t).map(|k| k.dequantize)
    }

    #[inline]
    pub fn quantize(&self, t: GgmlType) -> Option<QuantizeFn> {
        self.get(t).map(|k| k.quantize)
    }

    /// The quantizer for the activations of a product with weights of type `t`.
    #[inline]
    pub fn quantize_activations(&self, t: GgmlType) -> Option<QuantizeFn> {
        self.get(t)
            .and_then(|k| self.get(k.vec_dot_type))
            .map(|a| a.quantize_act)
    }

    #[inline]
    pub fn vec_dot(&self, t: GgmlType) -> Option<VecDotFn> {
        self.get(t).and_then(|k| k.vec_dot)
    }

    /// The batched dot product of weight type `t`, where this table has one
    /// (see [`VecDotBatchFn`]; [`crate::vec_dot_batch`] falls back to
    /// [`Kernels::vec_dot`] row by row).
    #[inline]
    pub fn vec_dot_batch(&self, t: GgmlType) -> Option<VecDotBatchFn> {
        self.batch.get(t as usize).copied().flatten()
    }

    /// The tiled dot product of weight type `t`, where this table has one
    /// (see [`VecDotTileFn`]).
    #[inline]
    pub fn vec_dot_tile(&self, t: GgmlType) -> Option<VecDotTileFn> {
        self.tile.get(t as usize).copied().flatten()
    }

    /// Weight rows the tiled kernel of `t` works through together: callers
    /// splitting a product into bands of rows waste least with multiples of
    /// it. 2 unless a table says otherwise (the VNNI K-quant tiles
    /// interleave 16 rows per vector; other tiles are 2 or 4 rows, and
    /// bands of even rows have served them).
    pub fn tile_rows(&self, t: GgmlType) -> usize {
        self.tile_rows.get(t as usize).map_or(2, |&r| r as usize)
    }

    /// This table with the tile row counts of the given types.
    pub(crate) fn with_tile_rows(mut self, entries: &[(GgmlType, u8)]) -> Kernels {
        for &(t, r) in entries {
            if let Some(slot) = self.tile_rows.get_mut(t as usize) {
                *slot = r;
            }
        }
        self
    }

    /// f16 bits to `f32`, exact ([`crate::f16_to_f32_row`] checks lengths).
    #[inline]
    pub fn f16_to_f32_row(&self) -> F16ToF32Fn {
        self.f16_rows.f16_to_f32
    }

    /// `f32` to f16 bits, bit-identical to [`crate::convert::f32_to_f16`].
    #[inline]
    pub fn f32_to_f16_row(&self) -> F32ToF16Fn {
        self.f16_rows.f32_to_f16
    }

    /// Query · f16 key ([`crate::dot_f32_f16`] checks lengths).
    #[inline]
    pub fn dot_f32_f16(&self) -> DotF32F16Fn {
        self.f16_rows.dot_f32_f16
    }

    /// Scores of a block of queries against a transposed tile of keys.
    #[inline]
    pub fn qk_tile(&self) -> QkTileFn {
        self.f16_rows.qk_tile
    }

    /// Weighted value rows added into a block of outputs.
    #[inline]
    pub fn pv_tile(&self) -> PvTileFn {
        self.f16_rows.pv_tile
    }

    /// The dense attention block.
    #[inline]
    pub fn attend_block(&self) -> AttendBlockFn {
        self.f16_rows.attend_block
    }

    /// The dense attention block with bfloat16 products, where the CPU has
    /// them natively.
    #[inline]
    pub fn attend_block_bf16(&self) -> Option<AttendBlockBf16Fn> {
        self.f16_rows.attend_block_bf16
    }

    /// Output += weight * f16 value, bit-identical across tables
    /// ([`crate::axpy_f16`] checks lengths).
    #[inline]
    pub fn axpy_f16(&self) -> AxpyF16Fn {
        self.f16_rows.axpy_f16
    }

    /// F16 query · f16 key, as this table's llama.cpp build sums it.
    #[inline]
    pub fn dot_f16(&self) -> DotF16Fn {
        self.f16_rows.dot_f16
    }

    /// F16 accumulator += weight * f16 value, rounded to F16.
    #[inline]
    pub fn mad_f16(&self) -> MadF16Fn {
        self.f16_rows.mad_f16
    }

    /// SwiGLU on a row.
    #[inline]
    pub fn swiglu(&self) -> SwigluFn {
        self.float_ops.swiglu
    }

    /// Softmax numerators of a row and their sum.
    #[inline]
    pub fn exp_sum(&self) -> ExpSumFn {
        self.float_ops.exp_sum
    }

    /// A block of floats transposed (a band of matrix-product results,
    /// weight rows x tokens, into the tokens' rows).
    #[inline]
    pub fn transpose(&self) -> TransposeFn {
        self.float_ops.transpose
    }

    /// F16 accumulator *= v, rounded to F16.
    #[inline]
    pub fn scale_f16(&self) -> ScaleF16Fn {
        self.f16_rows.scale_f16
    }
}

static KERNELS: OnceLock<Kernels> = OnceLock::new();

/// The table for this CPU, chosen on first use.
pub fn kernels() -> &'static Kernels {
    KERNELS.get_or_init(select)
}

/// Every table this CPU can run, best first, the scalar one last (for
/// tests and benchmarks that compare them; [`kernels`] is the one used).
pub fn tables() -> Vec<Kernels> {
    let scalar = crate::scalar::kernels();
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        out.extend(crate::x86::kernels(&scalar, None));
        if out.first().is_some_and(|k| k.name() != "x86-avx2") {
            out.extend(crate::x86::kernels(&scalar, Some("x86-avx2")));
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.extend(crate::aarch64::kernels(&scalar));
    out.push(scalar);
    out
}

/// Best table first; each SIMD module answers `None` when the CPU lacks its
/// features (or when it has no kernels yet). `EDGELLAMA_KERNELS=scalar` keeps
/// the portable table, which follows llama.cpp's plain C kernels to the bit:
/// tests use it to compare whole forward passes exactly.
/// `EDGELLAMA_KERNELS=x86-avx2` stops at the AVX2 table on a CPU with more.
fn select() -> Kernels {
    let scalar = crate::scalar::kernels();
    let prefer = std::env::var("EDGELLAMA_KERNELS").ok();
    if prefer.as_deref() == Some("scalar") {
        return scalar;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = crate::x86::kernels(&scalar, prefer.as_deref()) {
        return k;
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = crate::aarch64::kernels(&scalar) {
        return k;
    }
    scalar
}
