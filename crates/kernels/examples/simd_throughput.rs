//! Matrix-vector throughput of each weight type's `vec_dot`, scalar table
//! against the table selected for this CPU, on one thread: a matrix of ROWS
//! rows of N elements (by default 8192 rows, more than L2 holds for every
//! type) is streamed row by row against one quantized activation row, as a
//! token's generation does. GB/s counts weight bytes.
//!
//! A second table times prompt-style products: each weight row against a
//! batch of activation rows, row by row with `vec_dot` and with the table's
//! batched kernel (`vec_dot_batch`), in ns per (weight row, token) pair.
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

/// Seconds per matrix pass of `tokens` activation rows, each weight row
/// against all of them: with the batched kernel, or `vec_dot` per token.
fn time_batch(
    t: GgmlType,
    n: usize,
    mat: &[u8],
    acts: &[u8],
    tokens: usize,
    batched: bool,
    budget: Duration,
) -> f64 {
    let k = kernels();
    let (Some(dot), Some(rb), Some(arb)) = (
        k.vec_dot(t),
        t.row_size(n as u64),
        vec_dot_type(t).row_size(n as u64),
    ) else {
        return f64::NAN;
    };
    let batch = k.vec_dot_batch(t);
    let (rb, arb) = (rb as usize, arb as usize);
    let mut out = vec![0.0f32; tokens];
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut passes = 0;
    while passes < 3 || start.elapsed() < budget {
        let t0 = Instant::now();
        for row in mat.chunks_exact(rb) {
            match (batched, batch) {
                (true, Some(f)) => f(n, black_box(row), black_box(acts), &mut out),
                _ => {
                    for (o, a) in out.iter_mut().zip(acts.chunks_exact(arb)) {
                        *o = dot(n, black_box(row), black_box(a));
                    }
                }
            }
            black_box(&out);
        }
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

    let (n, tokens) = (4096usize, 8usize);
    println!(
        "\nbatched: each of {rows} weight rows of {n} against {tokens} activation rows, ns per (row, token)"
    );
    println!(
        "{:>5} {:>12} {:>12} {:>8}",
        "type", "vec_dot", "batch", "speedup"
    );
    let x: Vec<f32> = (0..n * DISTINCT).map(|_| next()).collect();
    let y: Vec<f32> = (0..n * tokens).map(|_| next()).collect();
    for t in TYPES {
        if fast.vec_dot_batch(t).is_none() {
            continue;
        }
        let (Some(quant), Some(aquant), Some(rb), Some(arb)) = (
            slow.quantize(t),
            slow.quantize(vec_dot_type(t)),
            t.row_size(n as u64),
            vec_dot_type(t).row_size(n as u64),
        ) else {
            continue;
        };
        let (rb, arb) = (rb as usize, arb as usize);
        let mut distinct = vec![0u8; rb * DISTINCT];
        quant(&x, &mut distinct);
        let mat: Vec<u8> = distinct.iter().copied().cycle().take(rb * rows).collect();
        let mut acts = vec![0u8; arb * tokens];
        aquant(&y, &mut acts);
        let pairs = (rows * tokens) as f64;
        let single = time_batch(t, n, &mat, &acts, tokens, false, budget);
        let batched = time_batch(t, n, &mat, &acts, tokens, true, budget);
        println!(
            "{:>5} {:>12.1} {:>12.1} {:>7.2}x",
            t.name(),
            single / pairs * 1e9,
            batched / pairs * 1e9,
            single / batched
        );
    }
}
