//! Attention over a paged KV pool of every cache type against a plain
//! softmax in f64 over the cached (rounded or dequantized) keys and values,
//! and the paged F16 routes against each other.

use edgellama_backend::{
    AttnJob, AttnShape, Backend, CpuBackend, Kind, KvConfig, KvLayout, KvPool, KvSeq, KvType,
};

const HD: usize = 64;
const LAYOUT: KvLayout = KvLayout {
    n_layer: 2,
    n_head_kv: 2,
    head_dim: HD,
};
const N_HEAD: usize = 6;

fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// A sequence of `n` positions in the given types, over blocks of 64.
fn filled(type_k: KvType, type_v: KvType, n: usize) -> KvSeq {
    let pool = KvPool::new(
        LAYOUT,
        KvConfig {
            type_k,
            type_v,
            n_positions: 1024,
            block_size: 64,
        },
    )
    .unwrap();
    let mut s = KvSeq::new(pool, 1024);
    s.reserve(n).unwrap();
    let w = LAYOUT.width();
    // Keys with a spread of magnitudes so that the softmax is not flat.
    let k: Vec<f32> = floats(n * w, 1).iter().map(|x| x * 3.0).collect();
    let v = floats(n * w, 2);
    s.store(1, 0, &k, &v).unwrap();
    s
}

/// Head `h` at position `p` as the cache holds it, in f32.
fn cached(s: &KvSeq, kind: Kind, p: usize, h: usize) -> Vec<f32> {
    let r = s.rows(1, kind);
    let mut out = vec![0f32; HD];
    (r.ty.kernels().unwrap().dequantize)(r.head(p, h), &mut out);
    out
}

/// Exact attention of query rows `q` (tokens at `pos0..`) over the cache.
fn reference(s: &KvSeq, q: &[f32], pos0: usize, scale: f64) -> Vec<f32> {
    let n_tokens = q.len() / (N_HEAD * HD);
    let mut out = vec![0f32; q.len()];
    for t in 0..n_tokens {
        for h in 0..N_HEAD {
            let kvh = h / (N_HEAD / LAYOUT.n_head_kv);
            let qi = &q[(t * N_HEAD + h) * HD..][..HD];
            let seen = pos0 + t + 1;
            let scores: Vec<f64> = (0..seen)
                .map(|p| {
                    let k = cached(s, Kind::K, p, kvh);
                    qi.iter()
                        .zip(&k)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let total: f64 = w.iter().sum();
            for (p, wp) in w.iter().enumerate() {
                let v = cached(s, Kind::V, p, kvh);
                for d in 0..HD {
                    out[(t * N_HEAD + h) * HD + d] += (wp / total * v[d] as f64) as f32;
                }
            }
        }
    }
    out
}

/// The shape of one decoding token at `pos0`.
fn shape(pos0: usize) -> AttnShape {
    AttnShape {
        n_head: N_HEAD,
        n_head_kv: LAYOUT.n_head_kv,
        head_dim: HD,
        pos0,
        n_tokens: 1,
        scale: 1.0 / (HD as f32).sqrt(),
    }
}

fn attend(be: &CpuBackend, s: &KvSeq, q: &[f32], pos0: usize) -> Vec<f32> {
    let n_tokens = q.len() / (N_HEAD * HD);
    let mut out = vec![0f32; q.len()];
    be.attention(
        q,
        s,
        1,
        AttnShape {
            n_head: N_HEAD,
            n_head_kv: LAYOUT.n_head_kv,
            head_dim: HD,
            pos0,
            n_tokens,
            scale: 1.0 / (HD as f32).sqrt(),
        },
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn every_cache_type_attends_as_a_plain_softmax_over_what_it_holds() {
    let be = CpuBackend::new(2).unwrap();
    let n = 150; // three blocks, the last partly filled
    for (tk, tv) in [
        (KvType::F16, KvType::F16),
        (KvType::F32, KvType::F32),
        (KvType::Bf16, KvType::Bf16),
        (KvType::Q8_0, KvType::Q8_0),
        (KvType::Q4_0, KvType::Q4_0),
        (KvType::Q4_1, KvType::Q4_1),
        (KvType::Q5_0, KvType::Q5_0),
        (KvType::Q5_1, KvType::Q5_1),
        (KvType::Iq4Nl, KvType::Iq4Nl),
        (KvType::F16, KvType::Q8_0),
        (KvType::Q8_0, KvType::F16),
    ] {
        let s = filled(tk, tv, n);
        for n_tokens in [1, 3] {
            let pos0 = n - n_tokens;
            let q = floats(n_tokens * N_HEAD * HD, 3 + n_tokens as u64);
            let got = attend(&be, &s, &q, pos0);
            let want = reference(&s, &q, pos0, 1.0 / (HD as f64).sqrt());
            // The query is rounded to the key type's dot format (F16, BF16
            // or Q8_0) and F16 values are summed in F16: a few parts in a
            // thousand of the values' range (1), far below what a wrong
            // row, head or block would give.
            let tol = match (tk, tv) {
                (KvType::F32, KvType::F32) => 1e-5,
                (KvType::Bf16, _) => 2e-2,
                _ => 6e-3,
            };
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= tol,
                "K {tk} V {tv}, {n_tokens} tokens: off by {worst}"
            );
        }
    }
}

#[test]
fn paged_f16_routes_agree_with_the_reference_and_batch_without_changing_bits() {
    let be = CpuBackend::new(2).unwrap();
    let n = 200;
    let s = filled(KvType::F16, KvType::F16, n);
    // 70 queries take the f32 tiled route over blocks of 64.
    let q = floats(70 * N_HEAD * HD, 9);
    let got = attend(&be, &s, &q, n - 70);
    let want = reference(&s, &q, n - 70, 1.0 / (HD as f64).sqrt());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "f32 route off by {worst}");
    // Decoding two sequences in one call gives each one's bits alone.
    let other = filled(KvType::Q8_0, KvType::Q4_0, 90);
    let (qa, qb) = (floats(N_HEAD * HD, 11), floats(N_HEAD * HD, 12));
    let (alone_a, alone_b) = (attend(&be, &s, &qa, n - 1), attend(&be, &other, &qb, 89));
    let (mut oa, mut ob) = (vec![0f32; qa.len()], vec![0f32; qb.len()]);
    be.attention_many(
        1,
        &mut [
            AttnJob {
                q: &qa,
                kv: &s,
                shape: shape(n - 1),
                out: &mut oa,
            },
            AttnJob {
                q: &qb,
                kv: &other,
                shape: shape(89),
                out: &mut ob,
            },
        ],
    )
    .unwrap();
    assert_eq!((oa, ob), (alone_a, alone_b));
}

#[test]
fn attention_past_the_reserved_blocks_is_refused() {
    let be = CpuBackend::new(1).unwrap();
    let s = filled(KvType::F16, KvType::F16, 64);
    let q = floats(N_HEAD * HD, 5);
    let mut out = vec![0f32; q.len()];
    let shape = AttnShape {
        n_head: N_HEAD,
        n_head_kv: LAYOUT.n_head_kv,
        head_dim: HD,
        pos0: 64,
        n_tokens: 1,
        scale: 0.125,
    };
    assert!(be.attention(&q, &s, 1, shape, &mut out).is_err());
}

#[test]
fn heads_of_a_kv_group_read_together_give_each_heads_bits_alone() {
    // One thread takes whole KV groups (two groups fill it); four threads
    // take single heads of one token's two groups. The bits must not
    // depend on it.
    let (one, two) = (CpuBackend::new(1).unwrap(), CpuBackend::new(4).unwrap());
    for (tk, tv) in [(KvType::F16, KvType::F16), (KvType::Q8_0, KvType::Q4_1)] {
        let s = filled(tk, tv, 130);
        let q = floats(N_HEAD * HD, 21);
        assert_eq!(
            attend(&one, &s, &q, 129),
            attend(&two, &s, &q, 129),
            "{tk}/{tv}"
        );
    }
}

#[test]
fn a_long_decode_split_over_the_threads_is_a_plain_softmax_and_batches_alike() {
    // 700 keys: past the split threshold; runs of 350 on 2 threads and
    // 234 on 3, crossing blocks of 64 inside.
    let n = 700;
    assert!(n >= edgellama_backend::SPLIT_KV_MIN_KEYS);
    for (tk, tol) in [(KvType::F16, 6e-3), (KvType::F32, 1e-5)] {
        let s = filled(tk, tk, n);
        let q = floats(N_HEAD * HD, 31);
        let want = reference(&s, &q, n - 1, 1.0 / (HD as f64).sqrt());
        for threads in [1, 2, 3] {
            let be = CpuBackend::new(threads).unwrap();
            let got = attend(&be, &s, &q, n - 1);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tol, "{tk}, {threads} threads: off by {worst}");
        }
        // Beside a short sequence and a quantized one, each gets its bits
        // alone.
        let be = CpuBackend::new(2).unwrap();
        let short = filled(tk, tk, 40);
        let quant = filled(KvType::Q8_0, KvType::Q8_0, 600);
        let (qb, qc) = (floats(N_HEAD * HD, 32), floats(N_HEAD * HD, 33));
        let alone = [
            attend(&be, &s, &q, n - 1),
            attend(&be, &short, &qb, 39),
            attend(&be, &quant, &qc, 599),
        ];
        let mut outs = [
            vec![0f32; q.len()],
            vec![0f32; q.len()],
            vec![0f32; q.len()],
        ];
        let [oa, ob, oc] = &mut outs;
        be.attention_many(
            1,
            &mut [
                AttnJob {
                    q: &q,
                    kv: &s,
                    shape: shape(n - 1),
                    out: oa,
                },
                AttnJob {
                    q: &qb,
                    kv: &short,
                    shape: shape(39),
                    out: ob,
                },
                AttnJob {
                    q: &qc,
                    kv: &quant,
                    shape: shape(599),
                    out: oc,
                },
            ],
        )
        .unwrap();
        assert_eq!(outs, alone, "{tk}");
    }
}
