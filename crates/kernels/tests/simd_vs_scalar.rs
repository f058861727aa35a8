//! The SIMD table against its scalar twin (`edgellama_kernels::scalar`), on
//! random data with fixed seeds, ragged lengths and hostile values:
//!
//! - quantizers and conversions must give the same bytes;
//! - `axpy_f16` must give the same bits;
//! - dot products must agree within a rounding bound (see [`dot_bound`]).
//!
//! On a CPU without the SIMD features the tests print that they are skipped
//! and return; on x86-64 with AVX2, FMA and F16C they must find an x86
//! table selected (`x86-avx2`, or `x86-avx512vnni`, which differs only in
//! its tiled products: those are tested for every table the CPU can run).

use edgellama_kernels::{
    dequantize_tensor, kernels, scalar, tables, vec_dot_type, GgmlType, Kernels,
};

/// The table under test, or `None` (with a message) when the CPU cannot run
/// one.
fn simd() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            let k = kernels();
            assert!(
                ["x86-avx2", "x86-avx512vnni"].contains(&k.name()),
                "AVX2 CPU but the SIMD table is not selected ({})",
                k.name()
            );
            return Some(k);
        }
        eprintln!("skipped: this CPU lacks AVX2/FMA/F16C, so there is no SIMD table to test");
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        eprintln!("skipped: no SIMD table is written for this architecture yet");
        None
    }
}

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

fn row_size(t: GgmlType, n: usize) -> usize {
    t.row_size(n as u64).unwrap() as usize
}

fn quantize(k: &Kernels, t: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; row_size(t, x.len())];
    (k.quantize(t).unwrap())(x, &mut q);
    q
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Element counts with every remainder the kernels treat separately: 1 to 3
/// blocks past a multiple of four (legacy formats), 1 to 7 elements past a
/// multiple of eight and of 32 (float rows).
fn lengths(t: GgmlType) -> Vec<usize> {
    match t.block_size() {
        1 => vec![1, 2, 7, 8, 9, 31, 32, 33, 100, 255, 1023, 1024, 4096],
        32 => vec![32, 64, 96, 128, 160, 224, 1056, 2048, 4096],
        _ => vec![256, 512, 768, 1280, 4096],
    }
}

/// Byte offsets in a block of the f16 scales whose sign decides whether the
/// parts of an element add up or cancel: `(make_positive, make_negative)`.
/// With `d >= 0` and `m >= 0` a q4_1 element `d * q + m` is the sum of its
/// parts' magnitudes; with `d >= 0` and `dmin <= 0` a q4_K element
/// `d * sc * q - dmin * m` is. Symmetric formats have a single part.
fn offset_scales(t: GgmlType) -> (&'static [usize], &'static [usize]) {
    use GgmlType as T;
    match t {
        T::Q4_1 | T::Q5_1 => (&[0, 2], &[]),
        T::Q4_K | T::Q5_K => (&[0], &[2]),
        T::Q2_K => (&[80], &[82]),
        _ => (&[], &[]),
    }
}

/// `sum(|w_i| * |a_i|)` over the parts of each weight: the size every
/// partial sum and rounded product of either implementation is bounded by.
fn magnitude(t: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f64 {
    let mut w = w.to_vec();
    let (pos, neg) = offset_scales(t);
    for block in w.chunks_exact_mut(t.type_size()) {
        for &o in pos {
            block[o + 1] &= 0x7f;
        }
        for &o in neg {
            block[o + 1] |= 0x80;
        }
    }
    let wd = dequantize_tensor(t, &w, n).unwrap();
    let ad = dequantize_tensor(vec_dot_type(t), a, n).unwrap();
    wd.iter()
        .zip(&ad)
        .map(|(&x, &y)| (x as f64).abs() * (y as f64).abs())
        .sum()
}

/// Largest allowed `|simd - scalar|` for a row of `n` elements.
///
/// Integer sums are exact on both sides, so they differ only in float
/// roundings. Each rounding is at most `u = 2^-24` times the value rounded,
/// and every value either side rounds (a block's scaled sum, a running sum)
/// is bounded by `magnitude`. A running sum takes at most `chain` roundings:
/// one per block for the scalar legacy formats, one per super-block (plus
/// an 8-lane fold) for the K-quants, and for float rows at most one per 32
/// elements in each SIMD lane plus the tail and the reduction (the scalar side sums in
/// f64 but rounds each product). Each block adds at most three roundings of
/// its own scaled terms. Both sides err, hence the factor 2. For 4096
/// elements of q4_0 this is about 1.7e-5 of `magnitude`; measured
/// differences are far below (printed by the test).
fn dot_bound(t: GgmlType, n: usize, magnitude: f64) -> f64 {
    let blocks = n / t.block_size();
    let chain = if t.block_size() == 1 { n / 32 } else { blocks } + 16;
    2.0 * (chain + 3) as f64 * f64::from(f32::EPSILON / 2.0) * magnitude
}

#[test]
fn vec_dot_agrees_with_scalar_twin_within_rounding_bound() {
    let Some(k) = simd() else { return };
    let s = &scalar::kernels();
    let mut rng = Rng(0x5eed_0001);
    let mut report = String::new();
    for t in WEIGHT_TYPES {
        let at = vec_dot_type(t);
        let (simd_dot, scalar_dot) = (k.vec_dot(t).unwrap(), s.vec_dot(t).unwrap());
        let mut worst = 0.0f64;
        for n in lengths(t) {
            for case in 0..6 {
                let scale = [1.0f32, 0.02, 30.0][case % 3];
                let x = rng.normals(n, scale);
                let y = rng.normals(n, 1.0 / scale);
                let mut w = quantize(s, t, &x);
                if case >= 3 && t.block_size() > 1 {
                    // Every bit pattern of the quants, with the scales that
                    // quantizing gave (random scale bits could be NaN).
                    let noise = rng.bytes(w.len());
                    let keep = quantize(s, t, &x);
                    for (b, (nb, kb)) in w.chunks_exact_mut(t.type_size()).zip(
                        noise
                            .chunks_exact(t.type_size())
                            .zip(keep.chunks_exact(t.type_size())),
                    ) {
                        b.copy_from_slice(nb);
                        for &o in scale_fields(t) {
                            b[o..o + 2].copy_from_slice(&kb[o..o + 2]);
                        }
                    }
                }
                let a = quantize(s, at, &y);
                let got = simd_dot(n, &w, &a) as f64;
                let want = scalar_dot(n, &w, &a) as f64;
                let m = magnitude(t, n, &w, &a);
                let bound = dot_bound(t, n, m);
                assert!(
                    (got - want).abs() <= bound,
                    "{t} n={n} case {case}: simd {got}, scalar {want}, |diff| {:e} > bound {bound:e} (magnitude {m:e})",
                    (got - want).abs()
                );
                if m > 0.0 {
                    worst = worst.max((got - want).abs() / m);
                }
            }
        }
        report.push_str(&format!(
            "{t:>5}: max |simd - scalar| / magnitude = {worst:.2e}\n"
        ));
    }
    println!("{report}");
}

/// Byte offsets of every f16 or f32 scale field in a block of `t`.
fn scale_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType as T;
    match t {
        T::Q4_0 | T::Q5_0 | T::Q8_0 => &[0],
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
        T::Q2_K => &[80, 82],
        T::Q3_K => &[108],
        T::Q6_K => &[208],
        _ => &[],
    }
}

/// Blocks that stress the activation quantizers: exact rounding ties, zero
/// blocks, both signs reaching the maximum, NaN, infinities, huge and
/// subnormal values.
fn hostile_rows(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    // Ties: with amax = 127 the scale is 1 and x.5 values are exact ties.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    (i % 255) as f32 * 0.5 - 63.5
                }
            })
            .collect(),
    );
    // The same with q8_K's scale: amax 127 on a negative value.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 256 == 5 {
                    -127.0
                } else {
                    (i % 253) as f32 * 0.5 - 63.0
                }
            })
            .collect(),
    );
    rows.push(vec![0.0; n]);
    rows.push(vec![-0.0; n]);
    // Both signs reach the magnitude; the first must decide the sign.
    rows.push(
        (0..n)
            .map(|i| match i % 64 {
                3 => -5.0,
                10 => 5.0,
                _ => (i % 7) as f32 * 0.1,
            })
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| match i % 64 {
                3 => 5.0,
                10 => -5.0,
                _ => -((i % 7) as f32) * 0.1,
            })
            .collect(),
    );
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3e38,
        -3e38,
        1e-40,
        -1e-42,
    ];
    for &sp in &specials {
        let mut r = rng.normals(n, 1.0);
        for (i, v) in r.iter_mut().enumerate() {
            if i % 97 == 13 {
                *v = sp;
            }
        }
        rows.push(r);
        // A block of nothing but that value, and one of tiny values only.
        rows.push(vec![sp; n]);
    }
    rows.push(rng.normals(n, 1e-39));
    rows.push(
        (0..n)
            .map(|i| if i % 2 == 0 { f32::NAN } else { 1.0 })
            .collect(),
    );
    rows
}

#[test]
fn activation_quantizers_are_byte_identical() {
    let Some(k) = simd() else { return };
    let s = &scalar::kernels();
    let mut rng = Rng(0x5eed_0002);
    for t in [
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::F16,
    ] {
        for n in [256usize, 512, 4096] {
            let mut rows = hostile_rows(n, &mut rng);
            for scale in [1e-3f32, 1.0, 1e4] {
                for _ in 0..8 {
                    rows.push(rng.normals(n, scale));
                }
            }
            for (r, x) in rows.iter().enumerate() {
                let got = quantize(k, t, x);
                let want = quantize(s, t, x);
                if matches!(t, GgmlType::Q8_K | GgmlType::F16) {
                    // These activation quantizers follow the reference
                    // rounding (llama.cpp's x86 build does too).
                    let mut act = vec![0u8; want.len()];
                    (k.get(t).unwrap().quantize_act)(x, &mut act);
                    assert!(
                        act == want,
                        "{t} n={n} row {r}: quantize_act differs from scalar"
                    );
                }
                if got != want {
                    let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                    let b = t.type_size();
                    panic!(
                        "{t} n={n} row {r}: byte {i} (block {}) simd {:#04x}, scalar {:#04x}",
                        i / b,
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// The x86 activation quantizers (llama.cpp's SIMD rounding) against their
/// scalar twins, on the same hostile and random rows.
#[test]
fn x86_activation_quantizers_match_scalar_twins() {
    let Some(k) = simd() else { return };
    let mut rng = Rng(0x5eed_0003);
    for (t, twin) in [
        (
            GgmlType::Q8_0,
            scalar::legacy::quantize_row_q8_0_x86 as fn(&[f32], &mut [u8]),
        ),
        (GgmlType::Q8_1, scalar::legacy::quantize_row_q8_1_x86),
    ] {
        let act = k.get(t).expect("entry").quantize_act;
        for n in [32usize, 256, 4096] {
            let mut rows = hostile_rows(n, &mut rng);
            for scale in [1e-3f32, 1.0, 1e4] {
                for _ in 0..8 {
                    rows.push(rng.normals(n, scale));
                }
            }
            for (r, x) in rows.iter().enumerate() {
                let mut got = vec![0u8; row_size(t, n)];
                let mut want = got.clone();
                act(x, &mut got);
                twin(x, &mut want);
                assert_eq!(got, want, "{t} n={n} row {r}");
            }
        }
    }
}

/// The F16-accumulator attention kernels (llama.cpp's AVX2 forms) against
/// the portable ones: dot products within rounding, the accumulator update
/// within one F16 step (a fused multiply-add may round differently), the
/// scale bit-identical.
#[test]
fn f16_attention_kernels_match_portable_forms() {
    let Some(k) = simd() else { return };
    let mut rng = Rng(0x5eed_0004);
    for n in [1usize, 7, 31, 32, 33, 64, 96, 128, 200] {
        for _ in 0..20 {
            let x = f16_row(&mut rng, n, 2.0);
            let y = f16_row(&mut rng, n, 2.0);
            let (a, b) = (
                (k.dot_f16())(&x, &y),
                edgellama_kernels::ops::dot_f16_ggml(&x, &y),
            );
            let mag: f32 = x
                .iter()
                .zip(&y)
                .map(|(&p, &q)| (scalar_f16(p) * scalar_f16(q)).abs())
                .sum();
            assert!((a - b).abs() <= 1e-5 * mag + 1e-30, "n={n}: {a} vs {b}");

            let v = rng.normals(1, 1.0)[0];
            let (mut ya, mut yb) = (y.clone(), y.clone());
            (k.mad_f16())(&mut ya, &x, v);
            edgellama_kernels::ops::mad_f16(&mut yb, &x, v);
            for (i, (&p, &q)) in ya.iter().zip(&yb).enumerate() {
                assert!(
                    (p as i32 - q as i32).abs() <= 1,
                    "n={n} [{i}]: {p:#06x} vs {q:#06x}"
                );
            }
            let (mut sa, mut sb) = (y.clone(), y);
            (k.scale_f16())(&mut sa, v);
            edgellama_kernels::ops::scale_f16(&mut sb, v);
            assert_eq!(sa, sb, "n={n}");
        }
    }
}

/// SwiGLU and softmax numerators with llama.cpp's AVX2 `expf` against the
/// portable forms: within a few ulp (the two `expf` approximations differ
/// only by fused vs separate rounding).
#[test]
fn float_ops_match_portable_forms() {
    let Some(k) = simd() else { return };
    let mut rng = Rng(0x5eed_0005);
    for n in [1usize, 7, 8, 9, 64, 100, 1536] {
        for scale in [0.1f32, 3.0, 30.0] {
            let g = rng.normals(n, scale);
            let u = rng.normals(n, 1.0);
            let (mut a, mut b) = (g.clone(), g.clone());
            (k.swiglu())(&mut a, &u);
            edgellama_kernels::ops::swiglu_inplace(&mut b, &u);
            for (i, (&p, &q)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (p - q).abs() <= 4e-6 * q.abs() + 1e-30,
                    "swiglu n={n} [{i}]: {p} vs {q}"
                );
            }
            let max = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (mut a, mut b) = (g.clone(), g);
            let (sa, sb) = (
                (k.exp_sum())(&mut a, max),
                edgellama_kernels::ops::exp_sum_ggml(&mut b, max),
            );
            assert!((sa - sb).abs() <= 1e-5 * sb, "exp_sum n={n}: {sa} vs {sb}");
            for (&p, &q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 4e-6 * q.abs() + 1e-38,
                    "exp n={n}: {p} vs {q}"
                );
            }
        }
    }
}

#[test]
fn f16_rows_convert_bit_identically() {
    let Some(k) = simd() else { return };
    // Every f16 value, in a row whose length leaves a tail.
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let n = all.len() - 3;
    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
    (k.f16_to_f32_row())(&all[..n], &mut a);
    scalar::attn::f16_to_f32_row(&all[..n], &mut b);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "f16 {i:#06x}");
    }
    // The same through the table's f16 "dequantize" of bytes.
    let bytes: Vec<u8> = all.iter().flat_map(|h| h.to_le_bytes()).collect();
    let c = dequantize_tensor(GgmlType::F16, &bytes, all.len()).unwrap();
    for (i, (x, y)) in c.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "f16 {i:#06x} via dequantize");
    }

    // f32 -> f16: random bit patterns, the values around every rounding
    // boundary and tie of f16, and the specials.
    let mut rng = Rng(0x5eed_0003);
    let mut src: Vec<f32> = (0..1 << 20)
        .map(|_| f32::from_bits(rng.next_u64() as u32))
        .collect();
    for h in 0..=u16::MAX {
        let f = scalar_f16(h);
        if f.is_finite() {
            let bits = f.to_bits();
            // Half an f16 ulp either side (ties), and one f32 ulp off them.
            for d in [0x1000u32, 0x0fff, 0x1001] {
                src.push(f32::from_bits(bits.wrapping_add(d)));
                src.push(f32::from_bits(bits.wrapping_sub(d)));
            }
        }
    }
    src.extend([
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffbf_ffff),
    ]);
    src.extend([
        65504.0,
        65519.99,
        65520.0,
        1e-8,
        5.96e-8,
        2.98e-8,
        2.9802326e-8,
    ]);
    for len in [src.len(), 1, 7, 9] {
        let (mut a, mut b) = (vec![0u16; len], vec![0u16; len]);
        (k.f32_to_f16_row())(&src[..len], &mut a);
        scalar::attn::f32_to_f16_row(&src[..len], &mut b);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "f32 {:#010x}", src[i].to_bits());
        }
    }
}

fn scalar_f16(h: u16) -> f32 {
    edgellama_kernels::convert::f16_to_f32(h)
}

fn f16_row(rng: &mut Rng, n: usize, scale: f32) -> Vec<u16> {
    rng.normals(n, scale)
        .into_iter()
        .map(edgellama_kernels::convert::f32_to_f16)
        .collect()
}

#[test]
fn attention_kernels_match_scalar_twins() {
    let Some(k) = simd() else { return };
    let mut rng = Rng(0x5eed_0004);
    let mut worst = 0.0f64;
    for n in [1usize, 2, 7, 8, 9, 31, 32, 33, 64, 100, 128, 1023, 4096] {
        for scale in [1.0f32, 1e-3, 300.0] {
            let q = rng.normals(n, 1.0);
            let key = f16_row(&mut rng, n, scale);
            let got = (k.dot_f32_f16())(&q, &key) as f64;
            let want = scalar::attn::dot_f32_f16(&q, &key) as f64;
            let m: f64 = q
                .iter()
                .zip(&key)
                .map(|(&a, &h)| (a as f64 * scalar_f16(h) as f64).abs())
                .sum();
            let bound = dot_bound(GgmlType::F16, n, m);
            assert!(
                (got - want).abs() <= bound,
                "dot_f32_f16 n={n}: simd {got}, scalar {want}, bound {bound:e}"
            );
            if m > 0.0 {
                worst = worst.max((got - want).abs() / m);
            }

            let value = f16_row(&mut rng, n, scale);
            let alpha = rng.normal();
            let mut y1 = rng.normals(n, 1.0);
            let mut y2 = y1.clone();
            (k.axpy_f16())(&mut y1, alpha, &value);
            scalar::attn::axpy_f16(&mut y2, alpha, &value);
            for (i, (a, b)) in y1.iter().zip(&y2).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "axpy_f16 n={n} element {i}: {a} vs {b}"
                );
            }
        }
    }
    println!("dot_f32_f16: max |simd - scalar| / magnitude = {worst:.2e}");
}

#[test]
fn kernels_stay_inside_shorter_slices() {
    // The f16 row kernels take the shorter slice's length; a longer output
    // keeps its tail untouched.
    let Some(k) = simd() else { return };
    let src = [0x3c00u16; 19];
    let mut out = [7.0f32; 23];
    (k.f16_to_f32_row())(&src, &mut out);
    assert!(out[..19].iter().all(|&v| v == 1.0) && out[19..].iter().all(|&v| v == 7.0));
    let mut h = [0xffffu16; 21];
    (k.f32_to_f16_row())(&[1.0; 17], &mut h);
    assert!(h[..17].iter().all(|&v| v == 0x3c00) && h[17..].iter().all(|&v| v == 0xffff));
    let mut y = [0.0f32; 11];
    (k.axpy_f16())(&mut y, 1.0, &src);
    assert!(y.iter().all(|&v| v == 1.0));
    assert_eq!((k.dot_f32_f16())(&[1.0; 40], &src), 19.0);
}

#[test]
fn batched_dot_products_give_single_row_bits() {
    let Some(k) = simd() else { return };
    let s = &scalar::kernels();
    let mut rng = Rng(0x5eed_0005);
    let mut covered = 0;
    for t in WEIGHT_TYPES {
        let at = vec_dot_type(t);
        let Some(batch) = k.vec_dot_batch(t) else {
            continue;
        };
        covered += 1;
        let single = k.vec_dot(t).unwrap();
        for n in lengths(t) {
            let w = quantize(s, t, &rng.normals(n, 1.0));
            for cols in [1usize, 2, 3, 4, 5, 7, 8, 9] {
                let a = quantize(s, at, &rng.normals(n * cols, 1.0));
                let mut out = vec![f32::NAN; cols];
                batch(n, &w, &a, &mut out);
                for (c, (&got, row)) in out.iter().zip(a.chunks_exact(row_size(at, n))).enumerate()
                {
                    let want = single(n, &w, row);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{t} n={n} batch of {cols}, row {c}: {got} vs {want}"
                    );
                }
                // The checked entry point, which also serves types without
                // a batched kernel, agrees too.
                let mut out2 = vec![0.0; cols];
                edgellama_kernels::vec_dot_batch(t, n, &w, &a, &mut out2).unwrap();
                assert_eq!(out, out2, "{t} n={n} cols={cols}");
            }
        }
    }
    assert!(covered >= 8, "batched kernels for {covered} types");
}

#[test]
fn batched_kernels_stay_inside_mismatched_slices() {
    // Out of contract the raw entries must not panic or read out of bounds:
    // they process the whole rows and blocks present.
    let Some(k) = simd() else { return };
    for t in WEIGHT_TYPES {
        let Some(batch) = k.vec_dot_batch(t) else {
            continue;
        };
        let n = 512;
        let (rs, ars) = (row_size(t, n), row_size(vec_dot_type(t), n));
        let mut out = [7.0f32; 6];
        batch(n, &vec![0u8; rs], &vec![0u8; 2 * ars + 5], &mut out);
        assert_eq!(out, [0.0, 0.0, 7.0, 7.0, 7.0, 7.0], "{t}");
        batch(n, &vec![0u8; rs / 3], &vec![0u8; 6 * ars], &mut out);
        batch(100_000, &vec![0u8; rs], &vec![0u8; 6 * ars], &mut out);
        batch(0, &[], &[], &mut out);
        assert_eq!(out, [0.0; 6], "{t}");
    }
}

#[test]
fn tiled_dot_products_give_single_pair_bits() {
    // Every (rows, cols) shape up to past two tiles each way, so full tiles,
    // ragged row edges, ragged column edges and both at once all run; for
    // every SIMD table this CPU has.
    if simd().is_none() {
        return;
    }
    let all = tables();
    for k in all.iter().filter(|k| k.name() != "scalar") {
        eprintln!("table {}", k.name());
        tiled_products_of(k);
    }
}

fn tiled_products_of(k: &Kernels) {
    let s = &scalar::kernels();
    let mut rng = Rng(0x5eed_0007);
    let mut covered = 0;
    for t in WEIGHT_TYPES {
        let at = vec_dot_type(t);
        let Some(tile) = k.vec_dot_tile(t) else {
            continue;
        };
        covered += 1;
        let single = k.vec_dot(t).unwrap();
        for n in lengths(t) {
            let (rs, ars) = (row_size(t, n), row_size(at, n));
            // 16, 17 and 33 rows: whole groups of the interleaved kernels
            // with and without a ragged one.
            for rows in [1usize, 2, 3, 4, 5, 7, 9, 16, 17, 33] {
                let w = quantize(s, t, &rng.normals(n * rows, 1.0));
                for cols in [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 13] {
                    let a = quantize(s, at, &rng.normals(n * cols, 1.0));
                    let mut out = vec![f32::NAN; rows * cols];
                    tile(n, &w, &a, &mut out);
                    for (r, wr) in w.chunks_exact(rs).enumerate() {
                        for (c, ar) in a.chunks_exact(ars).enumerate() {
                            let (got, want) = (out[r * cols + c], single(n, wr, ar));
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{t} n={n} {rows}x{cols}, pair ({r}, {c}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(covered >= 5, "tiled kernels for {covered} types");
}

#[test]
fn tiled_kernels_stay_inside_mismatched_slices() {
    // Out of contract the raw entries must not panic or read out of bounds:
    // they process the whole rows present and the rows `out` has room for.
    if simd().is_none() {
        return;
    }
    for k in tables().iter().filter(|k| k.name() != "scalar") {
        tiles_stay_inside(k);
    }
}

fn tiles_stay_inside(k: &Kernels) {
    for t in WEIGHT_TYPES {
        let Some(tile) = k.vec_dot_tile(t) else {
            continue;
        };
        let n = 512;
        let (rs, ars) = (row_size(t, n), row_size(vec_dot_type(t), n));
        // 3 weight rows (and a partial one) against 2 activation rows (and a
        // partial one), with room for only 2 rows of output and some spare.
        let mut out = [7.0f32; 5];
        tile(n, &vec![0u8; 3 * rs + 7], &vec![0u8; 2 * ars + 5], &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 7.0], "{t}");
        let mut out = [7.0f32; 6];
        tile(n, &vec![0u8; rs / 3], &vec![0u8; 6 * ars], &mut out);
        assert_eq!(out, [7.0; 6], "{t}: no whole weight row");
        tile(100_000, &vec![0u8; rs], &vec![0u8; 6 * ars], &mut out);
        tile(0, &[], &[], &mut out);
        assert_eq!(out, [0.0; 6], "{t}");
    }
}

#[test]
fn tiled_products_of_wide_rows_cross_their_cache_blocks() {
    // Long rows and many pairs, so that the tiled kernels' row and column
    // chunks (sized in bytes) end inside the product, at ragged places.
    if simd().is_none() {
        return;
    }
    let s = &scalar::kernels();
    let mut rng = Rng(0x5eed_0013);
    for k in tables().iter().filter(|k| k.name() != "scalar") {
        for t in WEIGHT_TYPES {
            let Some(tile) = k.vec_dot_tile(t) else {
                continue;
            };
            let single = k.vec_dot(t).unwrap();
            let at = vec_dot_type(t);
            let n = if t.block_size() == 1 { 3000 } else { 8192 };
            let (rs, ars) = (row_size(t, n), row_size(at, n));
            // 23 activation rows cross the blocks; 1 and 2 take the decoding
            // paths (long rows go four streams at a time, 37 = 9 x 4 + 1).
            for (rows, cols) in [(37, 23), (37, 1), (37, 2)] {
                let w = quantize(s, t, &rng.normals(n * rows, 1.0));
                let a = quantize(s, at, &rng.normals(n * cols, 1.0));
                let mut out = vec![f32::NAN; rows * cols];
                tile(n, &w, &a, &mut out);
                for (r, wr) in w.chunks_exact(rs).enumerate() {
                    for (c, ar) in a.chunks_exact(ars).enumerate() {
                        let (got, want) = (out[r * cols + c], single(n, wr, ar));
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{} {t} n={n} {rows}x{cols}, pair ({r}, {c}): {got} vs {want}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// The transposing scatter moves every float of the block, and only those,
/// to the place the portable loop does: ragged edges and short slices too.
#[test]
fn transpose_matches_portable_loop() {
    let Some(k) = simd() else { return };
    let mut rng = Rng(0x5eed_0011);
    for (rows, cols, ld) in [
        (1usize, 1usize, 1usize),
        (8, 8, 8),
        (8, 8, 13),
        (9, 17, 17),
        (48, 16, 512),
        (48, 7, 512),
        (23, 16, 40),
        (16, 3, 3),
    ] {
        let src = rng.normals(rows * ld, 1.0);
        // Whole blocks, then a source cut short inside its last row and a
        // destination cut short: both sides must stay in bounds and agree.
        for (src_len, dst_len) in [
            (src.len(), rows * cols),
            ((rows - 1) * ld + cols - 1, rows * cols),
            (src.len(), rows * cols - 1),
        ] {
            let (mut a, mut b) = (vec![f32::NAN; dst_len], vec![f32::NAN; dst_len]);
            (k.transpose())(&src[..src_len], ld, rows, cols, &mut a);
            edgellama_kernels::ops::transpose(&src[..src_len], ld, rows, cols, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{rows}x{cols} ld {ld}, src {src_len}, dst {dst_len}"
            );
            if src_len == src.len() && dst_len == rows * cols {
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(b[c * rows + r], src[r * ld + c]);
                    }
                }
            }
        }
    }
}

/// The attention tiles of every SIMD table against fused chains written out
/// here (bit for bit: each score and output is its own chain of fused
/// multiply-adds, whatever block its query is in), and the scalar table's
/// twins (rounded products) within a few ulp of the sums' magnitudes.
#[test]
fn attention_tiles_match_fused_chains_and_scalar_twins() {
    let mut rng = Rng(0x5eed_0012);
    let scalar = edgellama_kernels::scalar::kernels();
    for (nq, hd, nk) in [
        (1usize, 64usize, 64usize),
        (4, 64, 64),
        (7, 64, 37),
        (48, 64, 64),
        (5, 128, 17),
        (3, 40, 70),
        (9, 8, 1),
    ] {
        let q = rng.normals(nq * hd, 1.0);
        let kt = rng.normals(hd * nk, 1.0);
        let p: Vec<f32> = rng.normals(nq * nk, 1.0).iter().map(|x| x.abs()).collect();
        let v = rng.normals(nk * hd, 1.0);
        let out0 = rng.normals(nq * hd, 1.0);
        let scale = 0.125f32;
        let mut want_s = vec![0f32; nq * nk];
        let mut want_o = out0.clone();
        for i in 0..nq {
            for j in 0..nk {
                let mut acc = 0f32;
                for d in 0..hd {
                    acc = q[i * hd + d].mul_add(kt[d * nk + j], acc);
                }
                want_s[i * nk + j] = acc * scale;
                for d in 0..hd {
                    let o = &mut want_o[i * hd + d];
                    *o = p[i * nk + j].mul_add(v[j * hd + d], *o);
                }
            }
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for k in tables().iter().filter(|k| k.name() != "scalar") {
            let mut s = vec![f32::NAN; nq * nk];
            (k.qk_tile())(&q, hd, &kt, nk, scale, &mut s);
            assert_eq!(bits(&s), bits(&want_s), "{} qk {nq}x{hd}x{nk}", k.name());
            let mut o = out0.clone();
            (k.pv_tile())(&p, nk, &v, hd, &mut o);
            assert_eq!(bits(&o), bits(&want_o), "{} pv {nq}x{hd}x{nk}", k.name());
            // One query alone gets the numbers it got in its block.
            let mut s1 = vec![0f32; nk];
            (k.qk_tile())(&q[(nq - 1) * hd..], hd, &kt, nk, scale, &mut s1);
            assert_eq!(
                bits(&s1),
                bits(&want_s[(nq - 1) * nk..]),
                "{} alone",
                k.name()
            );
        }
        let mut s = vec![0f32; nq * nk];
        (scalar.qk_tile())(&q, hd, &kt, nk, scale, &mut s);
        let mut o = out0.clone();
        (scalar.pv_tile())(&p, nk, &v, hd, &mut o);
        for i in 0..nq {
            // Bounds from the magnitudes summed: n roundings of at most
            // half an ulp of the largest partial sum.
            let qn: f32 = q[i * hd..(i + 1) * hd].iter().map(|x| x.abs()).sum();
            for j in 0..nk {
                let tol = 2.0 * hd as f32 * f32::EPSILON * qn * 4.0 * scale;
                let (a, b) = (s[i * nk + j], want_s[i * nk + j]);
                assert!((a - b).abs() <= tol, "scalar qk [{i},{j}]: {a} vs {b}");
            }
            let pn: f32 = p[i * nk..(i + 1) * nk].iter().sum();
            for d in 0..hd {
                let tol = 2.0 * nk as f32 * f32::EPSILON * (pn * 4.0 + 4.0);
                let (a, b) = (o[i * hd + d], want_o[i * hd + d]);
                assert!((a - b).abs() <= tol, "scalar pv [{i},{d}]: {a} vs {b}");
            }
        }
    }
}

/// Softmax attention written out in f64: query rows `q` and key rows `k`
/// of `hd`, value rows `vs` apart; no keys gives rows of 0.
fn softmax_attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    vs: usize,
    hd: usize,
    scale: f32,
) -> Vec<f64> {
    let (nq, n_keys) = (q.len() / hd, k.len() / hd);
    let mut want = vec![0f64; nq * hd];
    for i in 0..nq {
        let s: Vec<f64> = (0..n_keys)
            .map(|j| {
                (0..hd)
                    .map(|d| q[i * hd + d] as f64 * k[j * hd + d] as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        for d in 0..hd {
            want[i * hd + d] = (0..n_keys)
                .map(|j| e[j] * v[j * vs + d] as f64)
                .sum::<f64>()
                / z;
        }
    }
    want
}

/// The dense attention block of every table against softmax attention
/// written out in f64 here, and so against the scalar twin: ragged query
/// blocks and key tiles, head widths that are not whole vectors, values
/// read in place between other heads' columns.
#[test]
fn attend_block_matches_definition_on_every_table() {
    use edgellama_kernels::scalar::attn::{attend_key_tile, ATTEND_KEY_TILE};
    let mut rng = Rng(0x5eed_0013);
    for (nq, hd, n_keys, vs) in [
        (1usize, 64usize, 1usize, 64usize),
        (5, 80, 37, 80),
        (33, 80, 97, 240),
        (70, 13, 300, 13),
        (9, 128, ATTEND_KEY_TILE, 256),
        (40, 8, 2 * ATTEND_KEY_TILE + 5, 24),
        (3, 96, 0, 96),
    ] {
        let q = rng.normals(nq * hd, 1.0);
        let k = rng.normals(n_keys * hd, 1.0);
        let v = rng.normals(n_keys * vs, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut kt = vec![0f32; n_keys * hd];
        for j in 0..n_keys {
            let (base, n) = attend_key_tile(j, n_keys, hd);
            for d in 0..hd {
                kt[base + d * n + j % ATTEND_KEY_TILE] = k[j * hd + d];
            }
        }
        let want = softmax_attention_f64(&q, &k, &v, vs, hd, scale);
        for kern in tables() {
            let mut out = vec![f32::NAN; nq * hd];
            (kern.attend_block())(&q, hd, &kt, &v, vs, n_keys, scale, &mut out);
            for (idx, (&g, &w)) in out.iter().zip(&want).enumerate() {
                // Values are N(0, 1): outputs are weighted means of them, so
                // their scale is 1 and the products' roundings stay far below.
                assert!(
                    (g as f64 - w).abs() < 2e-5,
                    "{} {nq}x{hd} over {n_keys} keys (stride {vs}) [{idx}]: {g} vs {w}",
                    kern.name()
                );
            }
        }
    }
}

/// The bfloat16 dense attention block: the scalar twin within bfloat16's
/// rounding of softmax attention written out in f64, and every table that
/// has a native block close to the twin: the same rounded inputs, but its
/// weights are rounded against each tile's running maximum and rescaled
/// when it grows, where the twin rounds them once against the row's
/// maximum, so the two differ by a weight's rounding (2^-9), not by ulps.
#[test]
fn attend_block_bf16_matches_twin_and_definition() {
    use edgellama_kernels::scalar::attn::{
        attend_bf16_key_index, attend_bf16_len, attend_bf16_value_index, attend_block_bf16,
        bf16_bits,
    };
    let mut rng = Rng(0x5eed_0014);
    for (nq, hd, n_keys) in [
        (1usize, 64usize, 1usize),
        (5, 80, 37),
        (33, 80, 97),
        (70, 13, 300),
        (9, 128, 96),
        (40, 8, 197),
        (3, 96, 0),
    ] {
        let q = rng.normals(nq * hd, 1.0);
        let k = rng.normals(n_keys * hd, 1.0);
        let v = rng.normals(n_keys * hd, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let len = attend_bf16_len(n_keys, hd);
        // Padding halves hold NaN's bits where the layout promises 0 only
        // in the weights, never in the inputs: fill with 0 as callers do.
        let (mut kp, mut vp) = (vec![0u16; len], vec![0u16; len]);
        for j in 0..n_keys {
            for d in 0..hd {
                kp[attend_bf16_key_index(j, d, n_keys, hd)] = bf16_bits(k[j * hd + d]);
                vp[attend_bf16_value_index(j, d, hd)] = bf16_bits(v[j * hd + d]);
            }
        }
        let mut twin = vec![f32::NAN; nq * hd];
        attend_block_bf16(&q, hd, &kp, &vp, n_keys, scale, &mut twin);
        let want = softmax_attention_f64(&q, &k, &v, hd, hd, scale);
        for (idx, (&got, &want)) in twin.iter().zip(&want).enumerate() {
            // Inputs and weights carry 2^-9 relative error each; the
            // output, a weighted mean of N(0, 1) values, moves by a few
            // hundredths at most.
            let got = got as f64;
            assert!(
                (got - want).abs() < 3e-2,
                "twin {nq}x{hd}x{n_keys} [{idx}]: {got} vs {want}"
            );
        }
        for kern in tables() {
            let Some(f) = kern.attend_block_bf16() else {
                continue;
            };
            let mut out = vec![f32::NAN; nq * hd];
            f(&q, hd, &kp, &vp, n_keys, scale, &mut out);
            for (idx, (&g, &t)) in out.iter().zip(&twin).enumerate() {
                assert!(
                    (g - t).abs() < 4e-3,
                    "{} {nq}x{hd} over {n_keys} keys [{idx}]: {g} vs {t}",
                    kern.name()
                );
            }
        }
    }
}
