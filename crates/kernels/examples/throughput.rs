//! Single-thread throughput of the selected kernel table, per type: the dot
//! product of a weight row with quantized activations, dequantization, and
//! activation quantization. The baseline the SIMD tables are measured against.
//!
//!     cargo run --release -p edgellama-kernels --example throughput [N]

use std::hint::black_box;
use std::time::Instant;

use edgellama_kernels::{kernels, supports, vec_dot_type, GgmlType};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let k = kernels();
    println!("table: {}, row of {n} elements, one thread", k.name());
    println!(
        "{:>6} {:>12} {:>12} {:>14} {:>14}",
        "type", "dot ns/row", "dot GB/s", "dequant GB/s", "quant act ns"
    );

    // Deterministic, roughly weight-shaped data.
    let mut s = 0x1234_5678u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32 - 0.5) * 0.1
    };
    let x: Vec<f32> = (0..n).map(|_| next()).collect();
    let y: Vec<f32> = (0..n).map(|_| next()).collect();

    for t in GgmlType::ALL.into_iter().filter(|&t| supports(t)) {
        let (Some(e), Some(ae)) = (k.get(t), k.get(vec_dot_type(t))) else {
            continue;
        };
        let Some(dot) = e.vec_dot else { continue };
        let Some(rs) = t.row_size(n as u64) else {
            continue;
        };
        let Some(ars) = e.vec_dot_type.row_size(n as u64) else {
            continue;
        };
        let mut w = vec![0u8; rs as usize];
        let mut a = vec![0u8; ars as usize];
        (e.quantize)(&x, &mut w);
        (ae.quantize)(&y, &mut a);

        let reps = (64 << 20) / w.len().max(1);
        let t0 = Instant::now();
        let mut acc = 0.0f32;
        for _ in 0..reps {
            acc += dot(n, black_box(&w), black_box(&a));
        }
        let dot_s = t0.elapsed().as_secs_f64() / reps as f64;
        black_box(acc);

        let mut out = vec![0f32; n];
        let t0 = Instant::now();
        for _ in 0..reps {
            (e.dequantize)(black_box(&w), &mut out);
            black_box(&out);
        }
        let deq_s = t0.elapsed().as_secs_f64() / reps as f64;

        let qreps = reps.min(2000);
        let t0 = Instant::now();
        for _ in 0..qreps {
            (ae.quantize)(black_box(&y), &mut a);
            black_box(&a);
        }
        let q_s = t0.elapsed().as_secs_f64() / qreps as f64;

        let gb = w.len() as f64 / 1e9;
        println!(
            "{:>6} {:>12.0} {:>12.2} {:>14.2} {:>14.0}",
            t.name(),
            dot_s * 1e9,
            gb / dot_s,
            gb / deq_s,
            q_s * 1e9
        );
    }
}
