//! x86-64 kernels: AVX2 with FMA and F16C, the baseline of every x86 CPU
//! llama.cpp's fast paths target. The table starts from the scalar one and
//! replaces the dot products, the activation quantizers, the f16 row
//! conversions and the attention kernels, and adds batched dot products
//! (one weight row against several activation rows) for the common weight
//! types.
//!
//! # Safety
//!
//! Every kernel in this module is an `unsafe fn` compiled with
//! `#[target_feature(enable = "avx2,fma,f16c")]`; running one on a CPU
//! without those features is undefined behaviour. They are reached only
//! through the safe closures that [`overrides`], [`f16_rows`],
//! [`batches`] and [`tiles`] build, each of which needs an [`Avx2`] token, which only
//! [`Avx2::detect`] makes, after `is_x86_feature_detected!` has confirmed all
//! three features at run time. So a kernel can only run on a CPU that has
//! them.
//!
//! Memory safety does not rest on the features: kernels read and write only
//! through slices and the fixed-size fields of block structs, each vector
//! load or store covering bytes inside them (`// SAFETY:` notes say which).
//! Like the scalar kernels they process the whole blocks present in every
//! slice, so out-of-contract lengths cannot make them read out of bounds.

mod attn;
mod flash;
mod float;
mod iq4nl;
mod kquants;
mod legacy;
mod simd;
mod tile_f16;
mod vnni;
mod vnni_k;

use edgellama_gguf::GgmlType;

use crate::dispatch::{
    AttendBlockBf16Fn, AttendBlockFn, F16RowKernels, FloatOps, Kernels, PvTileFn, QkTileFn,
    TypeKernels, VecDotBatchFn, VecDotFn, VecDotTileFn,
};

/// Proof that this CPU has AVX2, FMA and F16C.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub(crate) fn detect() -> Option<Avx2> {
        let ok = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        ok.then_some(Avx2(()))
    }
}

/// A safe closure around an AVX2 kernel with the signature of a table entry.
/// Only expanded inside functions that take an [`Avx2`] token.
macro_rules! avx2 {
    ($f:path, |$($arg:ident: $ty:ty),*| -> $ret:ty) => {
        |$($arg: $ty),*| -> $ret {
            // SAFETY: built only where an `Avx2` token proves that the CPU
            // has the features `$f` is compiled for (see the module's note).
            unsafe { $f($($arg),*) }
        }
    };
}

macro_rules! vec_dot {
    ($f:path) => {
        Some(avx2!($f, |n: usize, w: &[u8], a: &[u8]| -> f32))
    };
}

macro_rules! quantize {
    ($f:path) => {
        avx2!($f, |src: &[f32], dst: &mut [u8]| -> ())
    };
}

macro_rules! dequantize {
    ($f:path) => {
        avx2!($f, |src: &[u8], dst: &mut [f32]| -> ())
    };
}

/// The entries that replace scalar ones: for each type, its scalar entry with
/// the kernels written here swapped in.
fn overrides(_: Avx2, scalar: &Kernels) -> Vec<TypeKernels> {
    use GgmlType as T;
    let base = |t: GgmlType| scalar.get(t).copied();
    let mut out = Vec::new();
    let mut set = |t: GgmlType, f: &dyn Fn(&mut TypeKernels)| {
        if let Some(mut e) = base(t) {
            f(&mut e);
            out.push(e);
        }
    };
    set(T::F32, &|e| e.vec_dot = vec_dot!(float::vec_dot_f32));
    set(T::F16, &|e| {
        e.vec_dot = vec_dot!(float::vec_dot_f16);
        e.dequantize = dequantize!(float::dequantize_row_f16);
        e.quantize = quantize!(float::quantize_row_f16);
        e.quantize_act = quantize!(float::quantize_row_f16);
    });
    set(T::BF16, &|e| e.vec_dot = vec_dot!(float::vec_dot_bf16));
    set(T::Q4_0, &|e| {
        e.vec_dot = vec_dot!(legacy::vec_dot_q4_0_q8_0)
    });
    set(T::Q4_1, &|e| {
        e.vec_dot = vec_dot!(legacy::vec_dot_q4_1_q8_1)
    });
    set(T::Q5_0, &|e| {
        e.vec_dot = vec_dot!(legacy::vec_dot_q5_0_q8_0)
    });
    set(T::Q5_1, &|e| {
        e.vec_dot = vec_dot!(legacy::vec_dot_q5_1_q8_1)
    });
    set(T::Q8_0, &|e| {
        e.vec_dot = vec_dot!(legacy::vec_dot_q8_0_q8_0);
        e.quantize = quantize!(legacy::quantize_row_q8_0);
        e.quantize_act = quantize!(legacy::quantize_row_q8_0_x86);
    });
    set(T::Q8_1, &|e| {
        e.quantize = quantize!(legacy::quantize_row_q8_1);
        e.quantize_act = quantize!(legacy::quantize_row_q8_1_x86);
    });
    set(T::Q2_K, &|e| {
        e.vec_dot = vec_dot!(kquants::vec_dot_q2_k_q8_k)
    });
    set(T::Q3_K, &|e| {
        e.vec_dot = vec_dot!(kquants::vec_dot_q3_k_q8_k)
    });
    set(T::Q4_K, &|e| {
        e.vec_dot = vec_dot!(kquants::vec_dot_q4_k_q8_k)
    });
    set(T::Q5_K, &|e| {
        e.vec_dot = vec_dot!(kquants::vec_dot_q5_k_q8_k)
    });
    set(T::Q6_K, &|e| {
        e.vec_dot = vec_dot!(kquants::vec_dot_q6_k_q8_k)
    });
    set(T::IQ4_NL, &|e| {
        // llama.cpp's AVX2 product; both quantizers stay the scalar ones
        // (ggml-cpu has no SIMD iq4_nl quantizer either).
        e.vec_dot = vec_dot!(iq4nl::vec_dot_iq4_nl_q8_0)
    });
    set(T::Q8_K, &|e| {
        // Byte-identical to the scalar quantizer, so it serves activations
        // too (llama.cpp quantizes q8_K activations with the reference code).
        e.quantize = quantize!(kquants::quantize_row_q8_k);
        e.quantize_act = quantize!(kquants::quantize_row_q8_k);
    });
    out
}

fn f16_rows(_: Avx2) -> F16RowKernels {
    F16RowKernels {
        f16_to_f32: avx2!(float::f16_to_f32_row, |src: &[u16], dst: &mut [f32]| -> ()),
        f32_to_f16: avx2!(float::f32_to_f16_row, |src: &[f32], dst: &mut [u16]| -> ()),
        dot_f32_f16: avx2!(float::dot_f32_f16, |a: &[f32], b: &[u16]| -> f32),
        axpy_f16: avx2!(float::axpy_f16, |y: &mut [f32], alpha: f32, x: &[u16]| -> ()),
        qk_tile: avx2!(attn::qk_tile_avx2, |q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]| -> ()),
        pv_tile: avx2!(attn::pv_tile_avx2, |p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]| -> ()),
        attend_block_bf16: None,
        attend_block: avx2!(attn::attend_block_avx2, |q: &[f32], hd: usize, kt: &[f32], v: &[f32], vs: usize, n: usize, scale: f32, out: &mut [f32]| -> ()),
        dot_f16: avx2!(float::dot_f16, |a: &[u16], b: &[u16]| -> f32),
        mad_f16: avx2!(float::mad_f16, |y: &mut [u16], x: &[u16], v: f32| -> ()),
        scale_f16: avx2!(float::scale_f16, |y: &mut [u16], v: f32| -> ()),
    }
}

fn float_ops(_: Avx2) -> FloatOps {
    FloatOps {
        swiglu: avx2!(float::swiglu, |gate: &mut [f32], up: &[f32]| -> ()),
        exp_sum: avx2!(float::exp_sum, |x: &mut [f32], max: f32| -> f64),
        transpose: avx2!(float::transpose, |src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]| -> ()),
    }
}

macro_rules! batch {
    ($t:expr, $f:path) => {
        (
            $t,
            avx2!($f, |n: usize, w: &[u8], a: &[u8], out: &mut [f32]| -> ()) as VecDotBatchFn,
        )
    };
}

/// Batched dot products; each gives the bits of its type's `vec_dot` above.
fn batches(_: Avx2) -> [(GgmlType, VecDotBatchFn); 8] {
    use GgmlType as T;
    [
        batch!(T::Q4_0, legacy::vec_dot_batch_q4_0_q8_0),
        batch!(T::Q4_1, legacy::vec_dot_batch_q4_1_q8_1),
        batch!(T::Q5_0, legacy::vec_dot_batch_q5_0_q8_0),
        batch!(T::Q5_1, legacy::vec_dot_batch_q5_1_q8_1),
        batch!(T::Q8_0, legacy::vec_dot_batch_q8_0_q8_0),
        batch!(T::Q4_K, kquants::vec_dot_batch_q4_k_q8_k),
        batch!(T::Q5_K, kquants::vec_dot_batch_q5_k_q8_k),
        batch!(T::Q6_K, kquants::vec_dot_batch_q6_k_q8_k),
    ]
}

macro_rules! tile {
    ($t:expr, $f:path) => {
        (
            $t,
            avx2!($f, |n: usize, w: &[u8], a: &[u8], out: &mut [f32]| -> ()) as VecDotTileFn,
        )
    };
}

/// Tiled dot products; each gives the bits of its type's `vec_dot` above.
fn tiles(_: Avx2) -> Vec<(GgmlType, VecDotTileFn)> {
    use GgmlType as T;
    vec![
        tile!(T::Q4_0, legacy::vec_dot_tile_q4_0_q8_0),
        tile!(T::Q4_1, legacy::vec_dot_tile_q4_1_q8_1),
        tile!(T::Q5_0, legacy::vec_dot_tile_q5_0_q8_0),
        tile!(T::Q5_1, legacy::vec_dot_tile_q5_1_q8_1),
        tile!(T::Q8_0, legacy::vec_dot_tile_q8_0_q8_0),
    ]
}

/// Proof that this CPU has AVX2, FMA and F16C and AVX-512 F, VL, BW and
/// VNNI.
#[derive(Clone, Copy)]
pub(crate) struct Avx512Vnni(());

impl Avx512Vnni {
    pub(crate) fn detect() -> Option<Avx512Vnni> {
        Avx2::detect()?;
        let ok = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni");
        ok.then_some(Avx512Vnni(()))
    }
}

/// Proof that this CPU also multiplies bfloat16 pairs (AVX-512 BF16).
#[derive(Clone, Copy)]
pub(crate) struct Avx512Bf16(());

impl Avx512Bf16 {
    pub(crate) fn detect() -> Option<Avx512Bf16> {
        Avx512Vnni::detect()?;
        std::is_x86_feature_detected!("avx512bf16").then_some(Avx512Bf16(()))
    }
}

/// The dense attention block with bfloat16 products.
fn bf16_attend_block(_: Avx512Bf16) -> AttendBlockBf16Fn {
    |q: &[f32], hd: usize, kp: &[u16], vp: &[u16], n: usize, scale: f32, out: &mut [f32]| {
        // SAFETY: built only where an `Avx512Bf16` token proves the CPU has
        // the features the kernel is compiled for.
        unsafe { flash::attend_block_bf16_avx512(q, hd, kp, vp, n, scale, out) }
    }
}

/// A safe closure around an AVX-512 VNNI kernel. Only expanded inside
/// functions that take an [`Avx512Vnni`] token.
macro_rules! vnni_tile {
    ($t:expr, $f:path) => {
        (
            $t,
            (|n: usize, w: &[u8], a: &[u8], out: &mut [f32]| {
                // SAFETY: built only where an `Avx512Vnni` token proves the
                // CPU has the features `$f` is compiled for.
                unsafe { $f(n, w, a, out) }
            }) as VecDotTileFn,
        )
    };
}

/// Tiled dot products for AVX-512 VNNI. Those of the 32-element formats
/// give the bits of the AVX2 table's `vec_dot`; q4_K, q6_K and F16 keep
/// their own arithmetic (fewer roundings than ggml's), which the table's
/// `vec_dot` of those types follows (`vnni_overrides`).
fn vnni_tiles(_: Avx512Vnni) -> Vec<(GgmlType, VecDotTileFn)> {
    use GgmlType as T;
    vec![
        vnni_tile!(T::Q4_0, vnni::vec_dot_tile_q4_0_q8_0),
        vnni_tile!(T::Q4_1, vnni::vec_dot_tile_q4_1_q8_1),
        vnni_tile!(T::Q5_0, vnni::vec_dot_tile_q5_0_q8_0),
        vnni_tile!(T::Q5_1, vnni::vec_dot_tile_q5_1_q8_1),
        vnni_tile!(T::Q8_0, vnni::vec_dot_tile_q8_0_q8_0),
        vnni_tile!(T::Q4_K, vnni_k::vec_dot_tile_q4_k_q8_k),
        vnni_tile!(T::Q6_K, vnni_k::vec_dot_tile_q6_k_q8_k),
        vnni_tile!(T::F16, tile_f16::vec_dot_tile_f16),
    ]
}

/// The VNNI table's own K-quant and F16 products: its tiles keep each pair
/// in one vector lane (K-quants, see `vnni_k`) or one vector (F16, see
/// `tile_f16`), so its single products and batches are those tiles too.
fn vnni_overrides(_: Avx512Vnni, avx2: &Kernels) -> Vec<TypeKernels> {
    use GgmlType as T;
    let mut out = Vec::new();
    for (t, f) in [
        (
            T::Q4_K,
            (|n: usize, w: &[u8], a: &[u8]| unsafe { vnni_k::vec_dot_q4_k_q8_k(n, w, a) })
                as VecDotFn,
        ),
        (
            T::Q6_K,
            (|n: usize, w: &[u8], a: &[u8]| unsafe { vnni_k::vec_dot_q6_k_q8_k(n, w, a) })
                as VecDotFn,
        ),
        (
            T::F16,
            (|n: usize, w: &[u8], a: &[u8]| unsafe { tile_f16::vec_dot_f16(n, w, a) }) as VecDotFn,
        ),
    ] {
        if let Some(mut e) = avx2.get(t).copied() {
            e.vec_dot = Some(f);
            out.push(e);
        }
    }
    out
}

/// Batches of the VNNI K-quant products: their tiles with one weight row
/// (the AVX2 batches would give ggml's bits, not the table's).
fn vnni_batches(cpu: Avx512Vnni) -> Vec<(GgmlType, VecDotBatchFn)> {
    vnni_tiles(cpu)
        .into_iter()
        .filter(|(t, _)| matches!(t, GgmlType::Q4_K | GgmlType::Q6_K))
        .map(|(t, f)| (t, f as VecDotBatchFn))
        .collect()
}

/// The f32 attention route's score tile on 512-bit vectors.
fn vnni_qk_tile(_: Avx512Vnni) -> QkTileFn {
    |q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]| {
        // SAFETY: built only where an `Avx512Vnni` token proves the CPU has
        // the features the kernel is compiled for.
        unsafe { attn::qk_tile_avx512(q, hd, kt, nk, scale, s) }
    }
}

/// The f32 attention route's value tile on 512-bit vectors.
fn vnni_pv_tile(_: Avx512Vnni) -> PvTileFn {
    |p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]| {
        // SAFETY: as in `vnni_qk_tile`.
        unsafe { attn::pv_tile_avx512(p, nk, v, hd, out) }
    }
}

/// The dense attention block on 512-bit vectors.
fn vnni_attend_block(_: Avx512Vnni) -> AttendBlockFn {
    |q: &[f32],
     hd: usize,
     kt: &[f32],
     v: &[f32],
     vs: usize,
     n: usize,
     scale: f32,
     out: &mut [f32]| {
        // SAFETY: as in `vnni_qk_tile`.
        unsafe { flash::attend_block_avx512(q, hd, kt, v, vs, n, scale, out) }
    }
}

/// The AVX2 table.
fn avx2_table(cpu: Avx2, scalar: &Kernels) -> Kernels {
    scalar
        .with("x86-avx2", &overrides(cpu, scalar))
        .with_f16_rows(f16_rows(cpu))
        .with_float_ops(float_ops(cpu))
        .with_batch(&batches(cpu))
        .with_tile(&tiles(cpu))
}

/// The best x86 table for this CPU (`prefer` names one to stop at, such as
/// `"x86-avx2"`), or `None` when it lacks even AVX2. The AVX-512 VNNI table
/// is the AVX2 one with faster tiled products and gives the same bits.
pub(crate) fn kernels(scalar: &Kernels, prefer: Option<&str>) -> Option<Kernels> {
    let avx2 = avx2_table(Avx2::detect()?, scalar);
    if prefer == Some("x86-avx2") {
        return Some(avx2);
    }
    let vnni = match Avx512Vnni::detect() {
        Some(cpu) => avx2
            .with("x86-avx512vnni", &vnni_overrides(cpu, &avx2))
            .with_tile(&vnni_tiles(cpu))
            .with_batch(&vnni_batches(cpu))
            .with_tile_rows(&[(GgmlType::Q4_K, 16), (GgmlType::Q6_K, 16)])
            .with_attention_tiles(vnni_qk_tile(cpu), vnni_pv_tile(cpu))
            .with_attend_block(vnni_attend_block(cpu)),
        None => return Some(avx2),
    };
    Some(match Avx512Bf16::detect() {
        Some(cpu) => vnni.with_attend_block_bf16(bf16_attend_block(cpu)),
        None => vnni,
    })
}
