//! Prompt-processing throughput of the batched products, on one thread: a
//! band of weight rows (as one task of the CPU backend's matmul gets)
//! against a prompt's activation rows, row by row with `vec_dot_batch` and
//! in tiles with `vec_dot_tile`, in ns per (weight row, token) pair and
//! giga-pairs of 32 elements per second.
//!
//!     cargo run --release -p edgellama-kernels --example tile_throughput [TOKENS [BAND [SECONDS]]]

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgellama_kernels::{kernels, scalar, vec_dot_type, GgmlType};

const TYPES: [GgmlType; 5] = [
    GgmlType::Q4_1,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// Best seconds of `f` over the passes that fit in `budget` (at least 3).
fn best_of(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut passes = 0;
    while passes < 3 || start.elapsed() < budget {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
        passes += 1;
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(512);
    let band: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let budget = Duration::from_secs_f64(secs);
    let k = kernels();
    let s = scalar::kernels();
    println!(
        "{} table, {band} weight rows x {tokens} tokens, one thread, best pass of {secs} s",
        k.name()
    );
    println!(
        "{:>5} {:>5} {:>11} {:>11} {:>8} {:>13}",
        "type", "n", "batch ns", "tile ns", "speedup", "tile Gblk/s"
    );
    let mut seed = 0x1234_5678u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32 - 0.5) * 0.1
    };
    // SmolLM2-135M's widths and the 1B model's.
    for n in [576usize, 1536, 2048, 8192] {
        for t in TYPES {
            let at = vec_dot_type(t);
            let (Some(quant), Some(aquant), Some(rb), Some(arb)) = (
                s.quantize(t),
                k.quantize_activations(t),
                t.row_size(n as u64),
                at.row_size(n as u64),
            ) else {
                continue;
            };
            if n % t.block_size() != 0 {
                continue;
            }
            let (Some(batch), Some(tile)) = (k.vec_dot_batch(t), k.vec_dot_tile(t)) else {
                println!("{:>5} {:>5} (no tiled kernel)", t.name(), n);
                continue;
            };
            let (rb, arb) = (rb as usize, arb as usize);
            let x: Vec<f32> = (0..n * band).map(|_| next()).collect();
            let y: Vec<f32> = (0..n * tokens).map(|_| next()).collect();
            let mut w = vec![0u8; rb * band];
            quant(&x, &mut w);
            let mut a = vec![0u8; arb * tokens];
            for (dst, src) in a.chunks_exact_mut(arb).zip(y.chunks_exact(n)) {
                aquant(src, dst);
            }
            let mut out = vec![0f32; band * tokens];
            let tb = best_of(budget, || {
                for (wr, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(tokens)) {
                    batch(n, black_box(wr), black_box(&a), o);
                }
                black_box(&out);
            });
            let mut out2 = vec![0f32; band * tokens];
            let tt = best_of(budget, || {
                tile(n, black_box(&w), black_box(&a), &mut out2);
                black_box(&out2);
            });
            let same = out
                .iter()
                .zip(&out2)
                .all(|(p, q)| p.to_bits() == q.to_bits());
            let pairs = (band * tokens) as f64;
            println!(
                "{:>5} {:>5} {:>11.2} {:>11.2} {:>7.2}x {:>13.2}{}",
                t.name(),
                n,
                tb / pairs * 1e9,
                tt / pairs * 1e9,
                tb / tt,
                pairs * (n / 32) as f64 / tt / 1e9,
                if same { "" } else { "  MISMATCH" }
            );
        }
    }
}
