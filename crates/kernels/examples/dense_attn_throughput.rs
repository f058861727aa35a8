//! Throughput of the dense attention (the vision tower's shape: 80-wide
//! heads over one image's 6432 token rows), in GFLOP/s of the two products.
//! `cargo run --release -p edgellama-kernels --example dense_attn_throughput -- [queries] [keys]`
//! (`EDGELLAMA_DENSE_PRODUCTS=bf16`: the bfloat16 products)

use edgellama_kernels::dense_attn::{attention_segments, DenseProducts, DenseShape, KvSegment};
use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap_or(0));
    let n_q = args.next().filter(|&n| n > 0).unwrap_or(512);
    let n_k = args.next().filter(|&n| n > 0).unwrap_or(6432);
    let shape = DenseShape {
        n_head: 2,
        n_head_kv: 2,
        head_dim: 80,
        scale: 80f32.sqrt().recip(),
        products: match std::env::var("EDGELLAMA_DENSE_PRODUCTS").as_deref() {
            Ok("bf16") => DenseProducts::Bf16,
            _ => DenseProducts::F32,
        },
    };
    let fill = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                    / (1 << 24) as f32
                    - 0.5
            })
            .collect()
    };
    let q = fill(n_q * shape.q_width(), 1);
    let k = fill(n_k * shape.kv_width(), 2);
    let v = fill(n_k * shape.kv_width(), 3);
    let segs = [KvSegment { k: &k, v: &v }];
    let mut out = vec![0f32; q.len()];
    let flop = 4.0 * (n_q * n_k * shape.head_dim * shape.n_head) as f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        attention_segments(&q, &segs, shape, &mut Vec::new(), &mut out);
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{} queries x {} keys, {} heads of {}: {:.1} ms, {:.1} GFLOP/s ({})",
            n_q,
            n_k,
            shape.n_head,
            shape.head_dim,
            s * 1e3,
            flop / s / 1e9,
            edgellama_kernels::kernels().name()
        );
    }
}
