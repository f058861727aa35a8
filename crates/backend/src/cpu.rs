use crate::{AttnShape, Backend, BackendError, KvCache, QMatrix};
use edgellama_kernels as k;
use rayon::prelude::*;

/// The CPU backend: kernels from the run-time dispatch table, spread over a
/// dedicated pool of worker threads.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    n_threads: usize,
}

impl CpuBackend {
    pub fn new(n_threads: usize) -> Result<CpuBackend, BackendError> {
        let n_threads = n_threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .thread_name(|i| format!("edgellama-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::ThreadPool(e.to_string()))?;
        Ok(CpuBackend { pool, n_threads })
    }
}

/// Rows handed to one task: enough work to amortise scheduling, small
/// enough that every thread gets several tasks.
fn rows_per_task(n_out: usize, n_threads: usize) -> usize {
    (n_out / (n_threads * 8)).clamp(1, 64)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn n_threads(&self) -> usize {
        self.n_threads
    }

    fn matmul(
        &self,
        w: &QMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<(), BackendError> {
        let shape_err = |detail: String| BackendError::Shape {
            op: "matmul",
            detail,
        };
        if x.len() != n_tokens * w.n_in || y.len() != n_tokens * w.n_out {
            return Err(shape_err(format!(
                "x {} / y {} floats for {} tokens of {}x{}",
                x.len(),
                y.len(),
                n_tokens,
                w.n_out,
                w.n_in
            )));
        }
        let w_row =
            w.ty.row_size(w.n_in as u64)
                .ok_or_else(|| shape_err(format!("{} row of {} elements", w.ty, w.n_in)))?
                as usize;
        if w.data.len() != w_row * w.n_out {
            return Err(shape_err(format!(
                "weight holds {} bytes, {} rows need {}",
                w.data.len(),
                w.n_out,
                w_row * w.n_out
            )));
        }
        let act_ty = k::vec_dot_type(w.ty);
        let a_row = act_ty
            .row_size(w.n_in as u64)
            .ok_or_else(|| shape_err(format!("{} row of {} elements", act_ty, w.n_in)))?
            as usize;

        // Lengths are validated above, so the hot loops call the table's
        // unchecked entries directly.
        let table = k::kernels();
        let unsupported = || BackendError::Unsupported(w.ty, "cpu");
        let quantize = table
            .get(act_ty)
            .map(|e| e.quantize_act)
            .ok_or_else(unsupported)?;
        let dot = table.vec_dot(w.ty).ok_or_else(unsupported)?;
        let batch = table.vec_dot_batch(w.ty);
        let tile = table.vec_dot_tile(w.ty);

        self.pool.install(|| -> Result<(), BackendError> {
            // Activations are quantized once per token, then shared by every row.
            let mut act = vec![0u8; a_row * n_tokens];
            act.par_chunks_mut(a_row)
                .zip(x.par_chunks(w.n_in))
                .for_each(|(dst, src)| quantize(src, dst));

            let chunk = rows_per_task(w.n_out, self.n_threads);
            if n_tokens == 1 {
                y.par_chunks_mut(chunk).enumerate().for_each(|(ci, ys)| {
                    let r0 = ci * chunk;
                    for (j, yv) in ys.iter_mut().enumerate() {
                        let wr = &w.data[(r0 + j) * w_row..(r0 + j + 1) * w_row];
                        *yv = dot(w.n_in, wr, &act);
                    }
                });
                return Ok(());
            }
            // Batched: each task owns a band of rows and multiplies it with
            // every token (in register tiles of rows x tokens where the table
            // has a tiled kernel, else row by row), writing a transposed band
            // that is scattered into `y` afterwards.
            let mut yt = vec![0f32; w.n_out * n_tokens];
            yt.par_chunks_mut(chunk * n_tokens)
                .enumerate()
                .for_each(|(ci, band)| {
                    let r0 = ci * chunk;
                    if let Some(tile) = tile {
                        let rows = band.len() / n_tokens;
                        tile(w.n_in, &w.data[r0 * w_row..(r0 + rows) * w_row], &act, band);
                        return;
                    }
                    for (j, row_out) in band.chunks_mut(n_tokens).enumerate() {
                        let wr = &w.data[(r0 + j) * w_row..(r0 + j + 1) * w_row];
                        match batch {
                            Some(b) => b(w.n_in, wr, &act, row_out),
                            None => {
                                for (t, o) in row_out.iter_mut().enumerate() {
                                    *o = dot(w.n_in, wr, &act[t * a_row..(t + 1) * a_row]);
                                }
                            }
                        }
                    }
                });
            y.par_chunks_mut(w.n_out).enumerate().for_each(|(t, yr)| {
                for (r, v) in yr.iter_mut().enumerate() {
                    *v = yt[r * n_tokens + t];
                }
            });
            Ok(())
        })
    }

    fn attention(
        &self,
        q: &[f32],
        kv: &KvCache,
        layer: usize,
        s: AttnShape,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let hd = s.head_dim;
        let n_kv = s.pos0 + s.n_tokens;
        let embd_q = s.n_head * hd;
        if s.n_head == 0
            || s.n_head_kv == 0
            || !s.n_head.is_multiple_of(s.n_head_kv)
            || q.len() != s.n_tokens * embd_q
            || out.len() != q.len()
            || kv.n_embd_kv() != s.n_head_kv * hd
            || n_kv > kv.n_ctx()
            || layer >= kv.n_layer()
        {
            return Err(BackendError::Shape {
                op: "attention",
                detail: format!(
                    "{s:?} with q {} floats, cache {} wide",
                    q.len(),
                    kv.n_embd_kv()
                ),
            });
        }
        let group = s.n_head / s.n_head_kv;
        let keys = kv.keys(layer, n_kv);
        let values = kv.values(layer, n_kv);
        let embd_kv = kv.n_embd_kv();
        // llama.cpp's CPU flash attention takes two routes: batches of 64 or
        // more queries go through an f32 tiled kernel, smaller ones (and
        // single-token decoding) round the query to F16 and accumulate the
        // values in F16. We follow the same split so that our numbers track
        // the reference's, rounding included.
        let f16_route = s.n_tokens < FA_TILE_Q;
        self.pool.install(|| {
            out.par_chunks_mut(hd).enumerate().for_each_init(
                || AttnScratch::new(n_kv, hd),
                |sc, (i, o)| {
                    let (t, h) = (i / s.n_head, i % s.n_head);
                    let kvh = h / group;
                    let qh = &q[t * embd_q + h * hd..t * embd_q + (h + 1) * hd];
                    let seen = s.pos0 + t + 1;
                    let key =
                        |p: usize| &keys[p * embd_kv + kvh * hd..p * embd_kv + (kvh + 1) * hd];
                    let val =
                        |p: usize| &values[p * embd_kv + kvh * hd..p * embd_kv + (kvh + 1) * hd];
                    if f16_route {
                        attend_f16(qh, seen, key, val, s.scale, sc, o);
                    } else {
                        attend_f32(qh, seen, key, val, s.scale, sc, o);
                    }
                },
            )
        });
        Ok(())
    }
}

/// Query rows per tile of llama.cpp's f32 flash-attention kernel
/// (`GGML_FA_TILE_Q`); smaller batches take its F16 route.
const FA_TILE_Q: usize = 64;

struct AttnScratch {
    scores: Vec<f32>,
    q16: Vec<u16>,
    acc16: Vec<u16>,
}

impl AttnScratch {
    fn new(n_kv: usize, hd: usize) -> AttnScratch {
        AttnScratch {
            scores: vec![0.0; n_kv.max(FA_TILE_KV)],
            q16: vec![0; hd],
            acc16: vec![0; hd],
        }
    }
}

/// One head's attention with an online softmax, an F16 query and an F16
/// value accumulator, as llama.cpp's `flash_attn_ext_f16_one_chunk`.
fn attend_f16<'a>(
    q: &[f32],
    seen: usize,
    key: impl Fn(usize) -> &'a [u16],
    val: impl Fn(usize) -> &'a [u16],
    scale: f32,
    sc: &mut AttnScratch,
    out: &mut [f32],
) {
    let t = k::kernels();
    let (to_f16, dot, scale_acc, mad) =
        (t.f32_to_f16_row(), t.dot_f16(), t.scale_f16(), t.mad_f16());
    to_f16(q, &mut sc.q16);
    sc.acc16.iter_mut().for_each(|v| *v = 0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    for p in 0..seen {
        let s = dot(key(p), &sc.q16) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            let m_old = m;
            m = s;
            ms = (m_old - m).exp();
            scale_acc(&mut sc.acc16, ms);
        } else {
            vs = (s - m).exp();
        }
        mad(&mut sc.acc16, val(p), vs);
        sum = sum * ms + vs;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(&sc.acc16) {
        *o = k::convert::f16_to_f32(a) * inv;
    }
}

/// Keys per tile of llama.cpp's f32 flash-attention kernel (`GGML_FA_TILE_KV`).
const FA_TILE_KV: usize = 64;

/// One head's attention in `f32`, as llama.cpp's tiled flash-attention
/// kernel: keys in tiles of 64, an online softmax across tiles, values
/// accumulated in `f32`.
fn attend_f32<'a>(
    q: &[f32],
    seen: usize,
    key: impl Fn(usize) -> &'a [u16],
    val: impl Fn(usize) -> &'a [u16],
    scale: f32,
    sc: &mut AttnScratch,
    out: &mut [f32],
) {
    let t = k::kernels();
    let (dot, axpy, exp_sum) = (t.dot_f32_f16(), t.axpy_f16(), t.exp_sum());
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    out.iter_mut().for_each(|v| *v = 0.0);
    let kq = &mut sc.scores[..FA_TILE_KV];
    for start in (0..seen).step_by(FA_TILE_KV) {
        let n = (seen - start).min(FA_TILE_KV);
        for (j, s) in kq.iter_mut().enumerate() {
            *s = if j < n {
                dot(q, key(start + j)) * scale
            } else {
                f32::NEG_INFINITY
            };
        }
        let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m_new = m.max(tile_max);
        if m_new > m {
            let ms = (m - m_new).exp();
            out.iter_mut().for_each(|v| *v *= ms);
            sum *= ms;
        }
        m = m_new;
        sum = (sum as f64 + exp_sum(kq, m_new)) as f32;
        for (j, &w) in kq[..n].iter().enumerate() {
            axpy(out, w, val(start + j));
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}
