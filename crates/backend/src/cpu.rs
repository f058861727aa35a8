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

        self.pool.install(|| -> Result<(), BackendError> {
            // Activations are quantized once per token, then shared by every row.
            let mut act = vec![0u8; a_row * n_tokens];
            act.par_chunks_mut(a_row)
                .zip(x.par_chunks(w.n_in))
                .try_for_each(|(dst, src)| k::quantize_row(act_ty, src, dst))?;

            let chunk = rows_per_task(w.n_out, self.n_threads);
            if n_tokens == 1 {
                y.par_chunks_mut(chunk).enumerate().try_for_each(
                    |(ci, ys)| -> Result<(), BackendError> {
                        let r0 = ci * chunk;
                        for (j, yv) in ys.iter_mut().enumerate() {
                            let wr = &w.data[(r0 + j) * w_row..(r0 + j + 1) * w_row];
                            *yv = k::vec_dot(w.ty, w.n_in, wr, &act)?;
                        }
                        Ok(())
                    },
                )?;
                return Ok(());
            }
            // Batched: each task owns a band of rows and streams it once
            // against every token, writing a transposed band that is
            // scattered into `y` afterwards.
            let mut yt = vec![0f32; w.n_out * n_tokens];
            yt.par_chunks_mut(chunk * n_tokens)
                .enumerate()
                .try_for_each(|(ci, band)| -> Result<(), BackendError> {
                    let r0 = ci * chunk;
                    for (j, row_out) in band.chunks_mut(n_tokens).enumerate() {
                        let wr = &w.data[(r0 + j) * w_row..(r0 + j + 1) * w_row];
                        for (t, o) in row_out.iter_mut().enumerate() {
                            *o = k::vec_dot(w.ty, w.n_in, wr, &act[t * a_row..(t + 1) * a_row])?;
                        }
                    }
                    Ok(())
                })?;
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
        self.pool.install(|| {
            out.par_chunks_mut(hd).enumerate().for_each_init(
                || (vec![0f32; n_kv], vec![0f32; hd]),
                |(scores, acc), (i, o)| {
                    let (t, h) = (i / s.n_head, i % s.n_head);
                    let kvh = h / group;
                    let qh = &q[t * embd_q + h * hd..t * embd_q + (h + 1) * hd];
                    let seen = s.pos0 + t + 1;
                    for (p, sc) in scores[..seen].iter_mut().enumerate() {
                        let kr = &keys[p * embd_kv + kvh * hd..p * embd_kv + (kvh + 1) * hd];
                        let mut d = 0f32;
                        for (a, b) in qh.iter().zip(kr) {
                            d += a * b.to_f32();
                        }
                        *sc = d * s.scale;
                    }
                    k::ops::softmax(&mut scores[..seen]);
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for (p, &w) in scores[..seen].iter().enumerate() {
                        let vr = &values[p * embd_kv + kvh * hd..p * embd_kv + (kvh + 1) * hd];
                        for (a, b) in acc.iter_mut().zip(vr) {
                            *a += w * b.to_f32();
                        }
                    }
                    o.copy_from_slice(acc);
                },
            )
        });
        Ok(())
    }
}
