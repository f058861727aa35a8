//! Compares every kernel with llama.cpp's own code on the same inputs:
//! `tests/golden/quants.bin`, written by `tests/golden/gen_golden.sh` (which
//! compiles llama.cpp's `ggml-quants.c` and `ggml-cpu/quants.c`; see there).

use edgellama_kernels::convert::{f32_to_bf16, f32_to_f16};
use edgellama_kernels::{dequantize_row, quantize_row, vec_dot, vec_dot_type, GgmlType};

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes(4).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.bytes(4 * n)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    fn u16s(&mut self, n: usize) -> Vec<u16> {
        self.bytes(2 * n)
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

struct RowCase<'a> {
    q: &'a [u8],
    deq: Option<Vec<f32>>,
    act: Option<(&'a [u8], f32)>,
}

struct TypeCase<'a> {
    ty: GgmlType,
    vec_dot_type: GgmlType,
    rows: Vec<RowCase<'a>>,
}

struct Golden<'a> {
    n: usize,
    weights: Vec<Vec<f32>>,
    acts: Vec<Vec<f32>>,
    conv_in: Vec<u32>,
    conv_f16: Vec<u16>,
    conv_bf16: Vec<u16>,
    types: Vec<TypeCase<'a>>,
}

const GOLDEN: &[u8] = include_bytes!("golden/quants.bin");

fn golden() -> Golden<'static> {
    let mut r = Reader {
        data: GOLDEN,
        pos: 0,
    };
    assert_eq!(r.bytes(4), b"EGQ1");
    let n_rows = r.u32() as usize;
    let n = r.u32() as usize;
    let weights = (0..n_rows).map(|_| r.f32s(n)).collect();
    let acts = (0..n_rows).map(|_| r.f32s(n)).collect();
    let n_conv = r.u32() as usize;
    let conv_in = (0..n_conv).map(|_| r.u32()).collect();
    let conv_f16 = r.u16s(n_conv);
    let conv_bf16 = r.u16s(n_conv);
    let n_types = r.u32();
    let mut types = Vec::new();
    for _ in 0..n_types {
        let ty = GgmlType::from_u32(r.u32()).unwrap();
        let vec_dot_type = GgmlType::from_u32(r.u32()).unwrap();
        let row_bytes = r.u32() as usize;
        let act_row_bytes = r.u32() as usize;
        let has_deq = r.u32() != 0;
        let has_dot = r.u32() != 0;
        let rows = (0..n_rows)
            .map(|_| {
                let q = r.bytes(row_bytes);
                let deq = has_deq.then(|| r.f32s(n));
                let act = has_dot.then(|| {
                    let aq = r.bytes(act_row_bytes);
                    (aq, r.f32s(1)[0])
                });
                RowCase { q, deq, act }
            })
            .collect();
        types.push(TypeCase {
            ty,
            vec_dot_type,
            rows,
        });
    }
    assert_eq!(r.pos, GOLDEN.len(), "trailing bytes in quants.bin");
    Golden {
        n,
        weights,
        acts,
        conv_in,
        conv_f16,
        conv_bf16,
        types,
    }
}

fn row_size(t: GgmlType, n: usize) -> usize {
    t.row_size(n as u64).unwrap() as usize
}

/// Index and values of the first differing byte, for readable failures.
fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

#[test]
fn golden_covers_every_type() {
    let g = golden();
    let mut covered: Vec<GgmlType> = g.types.iter().map(|c| c.ty).collect();
    covered.sort_by_key(|t| *t as u32);
    // iq4_nl has its own golden file and tests (tests/iq4_nl.rs).
    let expected: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|&t| t != GgmlType::IQ4_NL)
        .collect();
    assert_eq!(covered, expected);
}

#[test]
fn quantize_is_byte_identical_to_llama_cpp() {
    let g = golden();
    for case in &g.types {
        for (r, row) in case.rows.iter().enumerate() {
            let mut q = vec![0u8; row_size(case.ty, g.n)];
            quantize_row(case.ty, &g.weights[r], &mut q).unwrap();
            assert!(
                q == row.q,
                "{} row {r}: first difference (index, ours, llama.cpp) {:?}",
                case.ty,
                first_diff(&q, row.q)
            );
        }
    }
}

#[test]
fn activation_quantize_is_byte_identical_to_llama_cpp() {
    let g = golden();
    for case in &g.types {
        assert_eq!(vec_dot_type(case.ty), case.vec_dot_type, "{}", case.ty);
        for (r, row) in case.rows.iter().enumerate() {
            let Some((aq_ref, _)) = row.act else { continue };
            let mut aq = vec![0u8; row_size(case.vec_dot_type, g.n)];
            quantize_row(case.vec_dot_type, &g.acts[r], &mut aq).unwrap();
            assert!(
                aq == aq_ref,
                "{} activations ({}) row {r}: first difference {:?}",
                case.ty,
                case.vec_dot_type,
                first_diff(&aq, aq_ref)
            );
        }
    }
}

#[test]
fn dequantize_is_bit_identical_to_llama_cpp() {
    let g = golden();
    for case in &g.types {
        for (r, row) in case.rows.iter().enumerate() {
            let Some(deq_ref) = &row.deq else { continue };
            let mut deq = vec![0f32; g.n];
            dequantize_row(case.ty, row.q, &mut deq).unwrap();
            for (i, (a, b)) in deq.iter().zip(deq_ref).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{} row {r} element {i}: {a} vs {b}",
                    case.ty
                );
            }
        }
    }
}

#[test]
fn vec_dot_matches_llama_cpp_generic() {
    let g = golden();
    // The scalar table keeps the operation order of llama.cpp's generic code,
    // so it agrees to the bit. The table picked for this CPU may be a SIMD
    // one, which sums in another order: tests/simd_vs_scalar.rs bounds its
    // difference from the scalar table; here it only has to stay close.
    let scalar = edgellama_kernels::scalar::kernels();
    let mut checked = 0;
    for case in &g.types {
        for (r, row) in case.rows.iter().enumerate() {
            let Some((aq, dot_ref)) = row.act else {
                continue;
            };
            let dot = scalar.vec_dot(case.ty).unwrap()(g.n, row.q, aq);
            assert_eq!(
                dot.to_bits(),
                dot_ref.to_bits(),
                "{} row {r}: ours {dot}, llama.cpp {dot_ref}",
                case.ty
            );
            let fast = vec_dot(case.ty, g.n, row.q, aq).unwrap();
            let tol = 1e-5 * dot_ref.abs().max(1e-3);
            assert!(
                (fast - dot_ref).abs() <= tol,
                "{} row {r}: {} table {fast}, llama.cpp {dot_ref}",
                case.ty,
                edgellama_kernels::kernels().name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 4, "one dot product per weight type and row");
}

#[test]
fn f16_and_bf16_rounding_match_ggml() {
    let g = golden();
    for ((&bits, &h), &b) in g.conv_in.iter().zip(&g.conv_f16).zip(&g.conv_bf16) {
        let f = f32::from_bits(bits);
        assert_eq!(f32_to_f16(f), h, "f16 of {bits:#010x}");
        assert_eq!(f32_to_bf16(f), b, "bf16 of {bits:#010x}");
    }
}
