//! iq4_nl against llama.cpp and against its own twins:
//!
//! - `tests/golden/iq4_nl.bin`, written by `tests/golden/gen_iq4_nl.py` from
//!   the pinned llama.cpp's libggml (see its header): both quantizers, the
//!   dequantizer and the generic and AVX2 dot products, to the bit;
//! - the x86 table's AVX2 product against its scalar twin (bit-identical)
//!   and against the generic scalar kernel (within a rounding bound), on
//!   random and hostile rows of several lengths.

use edgellama_kernels::scalar::iq4nl::{
    dequantize_row_iq4_nl, quantize_iq4_nl, quantize_row_iq4_nl, vec_dot_iq4_nl_q8_0,
    vec_dot_iq4_nl_q8_0_x86,
};
use edgellama_kernels::{
    dequantize_row, kernels, quantize_activations, quantize_row, scalar, supports, vec_dot,
    vec_dot_type, GgmlType,
};

const T: GgmlType = GgmlType::IQ4_NL;

fn row_size(t: GgmlType, n: usize) -> usize {
    t.row_size(n as u64).unwrap() as usize
}

// ---- the golden file ---------------------------------------------------------

struct Row<'a> {
    x: Vec<f32>,
    q_ref: &'a [u8],
    q_chunk: &'a [u8],
    deq: Vec<f32>,
    aq: &'a [u8],
    /// `[generic(q_ref), cpu(q_ref), generic(q_chunk), cpu(q_chunk)]`.
    dots: Vec<f32>,
}

struct Golden<'a> {
    n: usize,
    avx2: bool,
    rows: Vec<Row<'a>>,
    /// Both quantizers of [`bulk`]`(bulk_blocks)`.
    bulk_blocks: usize,
    bulk_ref: &'a [u8],
    bulk_chunk: &'a [u8],
}

/// The script's `bulk()`: Irwin-Hall(4) values from Knuth's MMIX LCG,
/// scaled per block by `2^-5..2^1`, every 11th value of every 5th block
/// times 8. Integers times powers of two, so exact in f32.
fn bulk(blocks: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(32 * blocks);
    for b in 0..blocks {
        for j in 0..32 {
            let mut s = 0i64;
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                s += ((state >> 32) >> 10) as i64;
            }
            let mut v = (s - (1 << 23)) as f32 * 2f32.powi(-22) * 2f32.powi(b as i32 % 7 - 5);
            if b % 5 == 0 && j % 11 == 3 {
                v *= 8.0;
            }
            out.push(v);
        }
    }
    out
}

const GOLDEN: &[u8] = include_bytes!("golden/iq4_nl.bin");

fn golden() -> Golden<'static> {
    let mut pos = 0;
    let mut take = |k: usize| {
        let b = &GOLDEN[pos..pos + k];
        pos += k;
        b
    };
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
    assert_eq!(take(4), b"EIQ4");
    let n_rows = u32_of(take(4)) as usize;
    let n = u32_of(take(4)) as usize;
    let avx2 = u32_of(take(4)) & 1 != 0;
    let (rb, arb) = (row_size(T, n), row_size(GgmlType::Q8_0, n));
    let rows = (0..n_rows)
        .map(|_| Row {
            x: f32s(take(4 * n)),
            q_ref: take(rb),
            q_chunk: take(rb),
            deq: f32s(take(4 * n)),
            aq: take(arb),
            dots: f32s(take(16)),
        })
        .collect();
    let bulk_blocks = u32_of(take(4)) as usize;
    let bulk_ref = take(18 * bulk_blocks);
    let bulk_chunk = take(18 * bulk_blocks);
    assert_eq!(pos, GOLDEN.len(), "trailing bytes in iq4_nl.bin");
    Golden {
        n,
        avx2,
        rows,
        bulk_blocks,
        bulk_ref,
        bulk_chunk,
    }
}

/// Whether ggml gives block `b` of `x` scale 0 without choosing indices
/// (no magnitude reaches `GROUP_MAX_EPS`, NaN included): it then leaves
/// stale ones.
fn unset_block(x: &[f32], b: usize) -> bool {
    x[32 * b..32 * (b + 1)]
        .iter()
        .all(|v| v.is_nan() || v.abs() < 1e-15)
}

#[test]
fn reference_quantizer_is_byte_identical_to_ggml() {
    let g = golden();
    let act = kernels().get(T).unwrap().quantize_act;
    for (r, row) in g.rows.iter().enumerate() {
        for (name, f) in [
            ("scalar", quantize_row_iq4_nl as fn(&[f32], &mut [u8])),
            ("table quantize_act", act),
        ] {
            let mut q = vec![0u8; row_size(T, g.n)];
            f(&row.x, &mut q);
            for (b, (ours, theirs)) in q
                .chunks_exact(18)
                .zip(row.q_ref.chunks_exact(18))
                .enumerate()
            {
                if unset_block(&row.x, b) {
                    assert_eq!(&ours[..2], &theirs[..2], "row {r} block {b}: scale");
                    assert!(ours[2..].iter().all(|&v| v == 0x88));
                } else {
                    assert_eq!(ours, theirs, "{name}: row {r} block {b}");
                }
            }
        }
    }
}

#[test]
fn llama_quantize_quantizer_is_byte_identical_to_ggml() {
    let g = golden();
    for (r, row) in g.rows.iter().enumerate() {
        let mut q = vec![0u8; row_size(T, g.n)];
        quantize_row(T, &row.x, &mut q).unwrap();
        assert_eq!(q, row.q_chunk, "row {r}");
        let mut q2 = vec![0u8; q.len()];
        quantize_iq4_nl(&row.x, &mut q2);
        assert_eq!(q2, q);
    }
    // The two differ (at least somewhere), so the table must pick each
    // for its purpose.
    assert!(g.rows.iter().any(|row| row.q_ref != row.q_chunk));
}

#[test]
fn both_quantizers_match_ggml_on_many_blocks() {
    let g = golden();
    let x = bulk(g.bulk_blocks);
    for (name, f, want) in [
        (
            "ref",
            quantize_row_iq4_nl as fn(&[f32], &mut [u8]),
            g.bulk_ref,
        ),
        ("chunk", quantize_iq4_nl, g.bulk_chunk),
    ] {
        let mut q = vec![0u8; want.len()];
        f(&x, &mut q);
        for (b, (ours, theirs)) in q.chunks_exact(18).zip(want.chunks_exact(18)).enumerate() {
            assert_eq!(ours, theirs, "{name}: block {b}");
        }
    }
}

#[test]
fn dequantize_is_bit_identical_to_ggml() {
    let g = golden();
    for (r, row) in g.rows.iter().enumerate() {
        let mut y = vec![0f32; g.n];
        dequantize_row(T, row.q_ref, &mut y).unwrap();
        for (i, (a, b)) in y.iter().zip(&row.deq).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "row {r} element {i}: {a} vs {b}");
        }
    }
}

#[test]
fn vec_dot_matches_ggml_generic_and_avx2() {
    let g = golden();
    let s = scalar::kernels();
    let table = kernels();
    for (r, row) in g.rows.iter().enumerate() {
        for (k, q) in [row.q_ref, row.q_chunk].into_iter().enumerate() {
            let (generic, cpu) = (row.dots[2 * k], row.dots[2 * k + 1]);
            let ours = s.vec_dot(T).unwrap()(g.n, q, row.aq);
            assert_eq!(
                ours.to_bits(),
                generic.to_bits(),
                "row {r}/{k}: {ours} vs {generic}"
            );
            assert_eq!(
                vec_dot_iq4_nl_q8_0(g.n, q, row.aq).to_bits(),
                generic.to_bits()
            );
            if g.avx2 {
                let twin = vec_dot_iq4_nl_q8_0_x86(g.n, q, row.aq);
                assert_eq!(
                    twin.to_bits(),
                    cpu.to_bits(),
                    "row {r}/{k}: x86 twin {twin} vs {cpu}"
                );
            }
            let fast = vec_dot(T, g.n, q, row.aq).unwrap();
            let want = if table.name().starts_with("x86") && g.avx2 {
                cpu
            } else {
                generic
            };
            assert_eq!(
                fast.to_bits(),
                want.to_bits(),
                "row {r}/{k}: {} table",
                table.name()
            );
        }
    }
}

#[test]
fn table_entry_is_complete() {
    assert_eq!(vec_dot_type(T), GgmlType::Q8_0);
    assert!(supports(T));
    for k in [kernels(), &scalar::kernels()] {
        let e = k.get(T).unwrap();
        assert_eq!((e.ty, e.vec_dot_type), (T, GgmlType::Q8_0));
        assert!(e.vec_dot.is_some());
    }
    // Activations for an iq4_nl product are q8_0's, as llama.cpp's.
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.1).collect();
    let mut a = vec![0u8; row_size(GgmlType::Q8_0, 64)];
    let mut b = a.clone();
    quantize_activations(GgmlType::Q8_0, &x, &mut a).unwrap();
    (kernels().quantize_activations(T).unwrap())(&x, &mut b);
    assert_eq!(a, b);
}

// ---- SIMD against the scalar twins ---------------------------------------------

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// Block counts odd and even, below and above one AVX2 pair.
const LENGTHS: [usize; 8] = [32, 64, 96, 128, 160, 224, 1056, 4096];

/// `sum |w_i| |a_i|` of the dequantized rows: what every rounded partial
/// sum of either kernel is bounded by.
fn magnitude(n: usize, w: &[u8], a: &[u8]) -> f64 {
    let mut wd = vec![0f32; n];
    let mut ad = vec![0f32; n];
    dequantize_row_iq4_nl(w, &mut wd);
    dequantize_row(GgmlType::Q8_0, a, &mut ad).unwrap();
    wd.iter()
        .zip(&ad)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum()
}

/// Rows of weights and their q8_0 activations: random at three scales,
/// random index bytes under kept scales, and activations of -128 (which
/// the AVX2 product, like llama.cpp's, counts with the wrong sign when the
/// level is negative, so those rows only test twin against SIMD).
fn cases(n: usize, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for case in 0..8 {
        let scale = [1.0f32, 0.02, 30.0][case % 3];
        let mut w = vec![0u8; row_size(T, n)];
        quantize_row_iq4_nl(&rng.normals(n, scale), &mut w);
        let mut a = vec![0u8; row_size(GgmlType::Q8_0, n)];
        quantize_activations(GgmlType::Q8_0, &rng.normals(n, 1.0 / scale), &mut a).unwrap();
        let mut exact = true;
        if case >= 4 {
            for block in w.chunks_exact_mut(18) {
                for v in &mut block[2..] {
                    *v = rng.next_u64() as u8;
                }
            }
        }
        if case >= 6 {
            for block in a.chunks_exact_mut(34) {
                block[2 + (rng.next_u64() % 32) as usize] = 0x80;
            }
            exact = false;
        }
        out.push((w, a, exact));
    }
    out
}

#[test]
fn simd_vec_dot_matches_its_scalar_twin_and_stays_near_generic() {
    let k = kernels();
    if !k.name().starts_with("x86") {
        eprintln!("skipped: no x86 SIMD table on this CPU ({})", k.name());
        return;
    }
    let simd = k.vec_dot(T).unwrap();
    let mut rng = Rng(0x1a4_0001);
    let mut worst = 0.0f64;
    for n in LENGTHS {
        for (c, (w, a, exact)) in cases(n, &mut rng).into_iter().enumerate() {
            let got = simd(n, &w, &a);
            let twin = vec_dot_iq4_nl_q8_0_x86(n, &w, &a);
            assert_eq!(
                got.to_bits(),
                twin.to_bits(),
                "n={n} case {c}: {got} vs {twin}"
            );
            if !exact {
                continue;
            }
            // Both sides round each block's scaled sum and a running sum
            // (the SIMD side an 8-lane fold on top): a few roundings per
            // block of at most u = 2^-24 of `magnitude` each.
            let generic = vec_dot_iq4_nl_q8_0(n, &w, &a) as f64;
            let m = magnitude(n, &w, &a);
            let bound = 2.0 * (n / 32 + 16) as f64 * f64::from(f32::EPSILON / 2.0) * m;
            let diff = (got as f64 - generic).abs();
            assert!(
                diff <= bound,
                "n={n} case {c}: simd {got}, generic {generic}, bound {bound:e}"
            );
            if m > 0.0 {
                worst = worst.max(diff / m);
            }
        }
    }
    println!("iq4_nl: max |simd - generic| / magnitude = {worst:.2e}");
}

#[test]
fn x86_twin_equals_generic_when_blocks_do_not_pair() {
    // One block takes the generic path only.
    let mut rng = Rng(0x1a4_0002);
    for (w, a, _) in cases(32, &mut rng).into_iter().take(6) {
        assert_eq!(
            vec_dot_iq4_nl_q8_0_x86(32, &w, &a).to_bits(),
            vec_dot_iq4_nl_q8_0(32, &w, &a).to_bits()
        );
    }
}

#[test]
fn simd_kernel_stays_inside_mismatched_slices() {
    let vd = kernels().vec_dot(T).unwrap();
    let w = vec![0x11u8; row_size(T, 160)];
    let a = vec![0x01u8; row_size(GgmlType::Q8_0, 160)];
    let _ = vd(160, &w, &a[..a.len() / 3]);
    let _ = vd(160, &w[..7], &a);
    let _ = vd(100_000, &w, &a);
    assert_eq!(
        vd(160, &w, &a).to_bits(),
        vec_dot_iq4_nl_q8_0_x86(160, &w, &a).to_bits()
    );
}

#[test]
fn quantized_rows_approximate_their_inputs() {
    // Relative RMS error of a Gaussian row: iq4_nl's levels fit such data
    // better than q4_0's uniform grid (about 0.1 relative RMS).
    let mut rng = Rng(0x1a4_0003);
    let n = 4096;
    let x = rng.normals(n, 0.7);
    let norm = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64).sqrt();
    for (name, f) in [
        ("ref", quantize_row_iq4_nl as fn(&[f32], &mut [u8])),
        ("chunk", quantize_iq4_nl),
    ] {
        let mut q = vec![0u8; row_size(T, n)];
        f(&x, &mut q);
        let mut y = vec![0f32; n];
        dequantize_row_iq4_nl(&q, &mut y);
        let err = (x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt()
            / norm;
        assert!(err < 0.1, "{name}: relative RMS error {err:.3}");
        eprintln!("iq4_nl {name}: relative RMS error {err:.4}");
    }
}
