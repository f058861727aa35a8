//! Matrix-vector throughput of each weight type's `vec_dot`, scalar table
//! against the table selected for this CPU, on one thread: a matrix of ROWS
//! rows of N elements (by default 8192 rows, more than L2 holds for every
//! type) is streamed row by row against one quantized activation row, as a
//! token's generation does. GB/s counts weight bytes.
//!
//!     cargo run --release -p edgellama-kernels --example simd_throughput [ROWS [SECONDS]]

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgellama_kernels::{kernels, scalar, vec_dot_type, GgmlType, Kernels};

const TYPES: [GgmlType; 13] = [
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
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// Distinct rows quantized; the matrix repeats them (quantizing every row
/// of a large K-quant matrix would take minutes and stream the same bytes).
const DISTINCT: usize = 64;

/// Seconds per matrix pass with table `k`, best of the passes run in `budget`.
fn time_matvec(
    k: &Kernels,
    t: GgmlType,
    n: usize,
    mat: &[u8],
    act: &[u8],
    budget: Duration,
) -> f64 {
    let (Some(dot), Some(rb)) = (k.vec_dot(t), t.row_size(n as u64)) else {
        return f64::NAN;
    };
    let rb = rb as usize;
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut passes = 0;
    while passes < 3 || start.elapsed() < budget {
        let t0 = Instant::now();
        let mut acc = 0.0f32;
        for row in mat.chunks_exact(rb) {
            acc += dot(n, black_box(row), black_box(act));
        }
        black_box(acc);
        best = best.min(t0.elapsed().as_secs_f64());
        passes += 1;
    }
    best
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8192);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let budget = Duration::from_secs_f64(secs);
    let fast = kernels();
    let slow = scalar::kernels();
    println!(
        "{} rows per matrix, one thread, best pass of {secs} s; GB/s of weight bytes",
        rows
    );
    println!(
        "{:>5} {:>5} {:>9} {:>11} {:>11} {:>11} {:>8}",
        "type",
        "n",
        "matrix MB",
        "scalar GB/s",
        format!("{} GB/s", fast.name().trim_start_matches("x86-")),
        "ns/row",
        "speedup"
    );

    let mut s = 0x1234_5678u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32 - 0.5) * 0.1
    };
    for n in [2048usize, 4096] {
        let x: Vec<f32> = (0..n * DISTINCT).map(|_| next()).collect();
        let y: Vec<f32> = (0..n).map(|_| next()).collect();
        for t in TYPES {
            let (Some(quant), Some(aquant)) = (slow.quantize(t), slow.quantize(vec_dot_type(t)))
            else {
                continue;
            };
            let (Some(rb), Some(arb)) = (t.row_size(n as u64), vec_dot_type(t).row_size(n as u64))
            else {
                continue;
            };
            let (rb, arb) = (rb as usize, arb as usize);
            let mut distinct = vec![0u8; rb * DISTINCT];
            quant(&x, &mut distinct);
            let mut mat = Vec::with_capacity(rb * rows);
            while mat.len() < rb * rows {
                let take = (rb * rows - mat.len()).min(distinct.len());
                mat.extend_from_slice(&distinct[..take]);
            }
            let mut act = vec![0u8; arb];
            aquant(&y, &mut act);

            let ts = time_matvec(&slow, t, n, &mat, &act, budget);
            let tf = time_matvec(fast, t, n, &mat, &act, budget);
            let gb = mat.len() as f64 / 1e9;
            println!(
                "{:>5} {:>5} {:>9.1} {:>11.2} {:>11.2} {:>11.1} {:>7.1}x",
                t.name(),
                n,
                mat.len() as f64 / 1e6,
                gb / ts,
                gb / tf,
                tf / rows as f64 * 1e9,
                ts / tf
            );
        }
    }
}
