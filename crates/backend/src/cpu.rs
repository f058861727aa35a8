use crate::kv::{Kind, KvSeq, KvType, Rows};
use crate::pool::Pool;
use crate::{AttnJob, AttnShape, Backend, BackendError, QMatrix};
use edgellama_gguf::GgmlType;
use edgellama_kernels as k;

/// The CPU backend: kernels from the run-time dispatch table, spread over a
/// dedicated pool of worker threads.
pub struct CpuBackend {
    pool: Pool,
}

impl CpuBackend {
    pub fn new(n_threads: usize) -> Result<CpuBackend, BackendError> {
        let pool =
            Pool::new(n_threads.max(1)).map_err(|e| BackendError::ThreadPool(e.to_string()))?;
        Ok(CpuBackend { pool })
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be
    /// shorter) and calls `f(index, chunk)` for each on the pool.
    fn par_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.pool.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: task `i` alone touches `start..start + n`, inside
            // `data`, which outlives `run`.
            let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, part);
        });
    }

    /// [`Self::par_chunks_mut`] over rows of `n` elements: runs of whole
    /// rows, at least `min_rows` each (fewer rows stay on the calling
    /// thread), and `f(first_row, run)`. Row-wise steps give the same bits
    /// however the rows are split.
    fn par_rows_mut<T: Send>(
        &self,
        data: &mut [T],
        n: usize,
        min_rows: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let rows = data.len() / n.max(1);
        let per = rows.div_ceil(self.n_threads() * 2).max(min_rows.max(1));
        self.par_chunks_mut(data, per * n, |i, run| f(i * per, run));
    }
}

/// A raw pointer that tasks on other threads may use for disjoint parts of
/// one slice.
struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Tokens per block of the transposing scatter of batched products.
const SCATTER_TOKENS: usize = 16;

/// Tokens multiplied together at most: a longer batch (an image's thousands
/// of rows in the vision tower) goes through in blocks of this many.
const MATMUL_TOKEN_BLOCK: usize = 512;

/// A task's products before they are scattered token by token (`band`,
/// weight rows x tokens) and one block of them transposed (`block`).
struct BandBuffers {
    band: Vec<f32>,
    block: Vec<f32>,
}

thread_local! {
    static BAND: std::cell::RefCell<BandBuffers> =
        const { std::cell::RefCell::new(BandBuffers { band: Vec::new(), block: Vec::new() }) };
}

/// Checks an element-wise step's operands: `a` and `b` the same length, a
/// whole number of rows of `row` (non-zero) elements.
fn check_rows(op: &'static str, a: usize, b: usize, row: usize) -> Result<(), BackendError> {
    if row == 0 || a != b || !a.is_multiple_of(row) {
        return Err(BackendError::Shape {
            op,
            detail: format!("{a} and {b} floats in rows of {row}"),
        });
    }
    Ok(())
}

/// Below these sizes a step runs on the calling thread: handing it out
/// would cost more than it saves (a decoding step's one row).
const PAR_MIN_ROWS: usize = 4;
const PAR_MIN_FLOATS: usize = 16 * 1024;

/// Rows handed to one task: several tasks per thread so that a thread that
/// starts late (or is interrupted) does not hold up the others, and at least
/// a few rows so that claiming a task stays a small part of it. Batches:
/// whole multiples of the tiled kernel's row block `unit`, preferring a
/// size that splits the rows into equal tasks, as many for every thread
/// (SmolLM2's 576 rows in 16-row groups: 12 tasks of 48 rows rather than 7
/// of 80 and one of 16, which leaves one thread idle a fifth of the time).
fn rows_per_task(n_out: usize, n_threads: usize, n_tokens: usize, unit: usize) -> usize {
    if n_tokens == 1 {
        let r = n_out.div_ceil(n_threads * 4).max(16);
        return r.div_ceil(2) * 2;
    }
    let unit = unit.max(1);
    let units = n_out.div_ceil(unit);
    let per = units.div_ceil(n_threads * 4).max(1);
    let even = (1..=per)
        .rev()
        .find(|&p| units.is_multiple_of(p) && (units / p).is_multiple_of(n_threads.max(1)));
    even.unwrap_or(per) * unit
}

/// One weight matrix of a group sharing the same input, checked.
struct Checked<'a> {
    w: &'a QMatrix<'a>,
    w_row: usize,
    dot: k::VecDotFn,
    batch: Option<k::VecDotBatchFn>,
    tile: Option<k::VecDotTileFn>,
}

impl CpuBackend {
    fn check<'a>(
        &self,
        w: &'a QMatrix<'a>,
        act_ty: GgmlType,
        n_in: usize,
    ) -> Result<Checked<'a>, BackendError> {
        let shape_err = |detail: String| BackendError::Shape {
            op: "matmul",
            detail,
        };
        if w.n_in != n_in || k::vec_dot_type(w.ty) != act_ty {
            return Err(shape_err(format!(
                "{} {}x{} grouped with inputs of {} as {}",
                w.ty, w.n_out, w.n_in, n_in, act_ty
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
        let table = k::kernels();
        let dot = table
            .vec_dot(w.ty)
            .ok_or(BackendError::Unsupported(w.ty, "cpu"))?;
        Ok(Checked {
            w,
            w_row,
            dot,
            batch: table.vec_dot_batch(w.ty),
            tile: table.vec_dot_tile(w.ty),
        })
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    fn rms_norm(
        &self,
        x: &[f32],
        w: &[f32],
        eps: f32,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        check_rows("rms_norm", x.len(), out.len(), w.len())?;
        let n = w.len();
        // A row's sum is one sequential chain: only a batch of rows runs in
        // parallel.
        self.par_rows_mut(out, n, PAR_MIN_ROWS, |r0, dst| {
            let xs = &x[r0 * n..][..dst.len()];
            for (xr, or) in xs.chunks_exact(n).zip(dst.chunks_exact_mut(n)) {
                k::ops::rms_norm(xr, w, eps, or);
            }
        });
        Ok(())
    }

    fn attention_segments(
        &self,
        q: &[f32],
        segs: &[crate::KvSegment<'_>],
        shape: crate::DenseShape,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let (wq, wkv) = (shape.q_width(), shape.kv_width());
        let bad_seg = segs
            .iter()
            .any(|s| s.k.len() != s.v.len() || wkv == 0 || !s.k.len().is_multiple_of(wkv));
        let groups = shape.n_head_kv > 0 && shape.n_head.is_multiple_of(shape.n_head_kv);
        if wq == 0 || q.len() != out.len() || !q.len().is_multiple_of(wq) || bad_seg || !groups {
            return Err(BackendError::Shape {
                op: "attention_segments",
                detail: format!(
                    "{} query floats, {} output floats, {} heads over {} KV heads of {}",
                    q.len(),
                    out.len(),
                    shape.n_head,
                    shape.n_head_kv,
                    shape.head_dim
                ),
            });
        }
        let n_rows = q.len() / wq;
        if !k::dense_attn::uses_tiles(n_rows) {
            k::dense_attn::attention_segments(q, segs, shape, &mut Vec::new(), out);
            return Ok(());
        }
        // Keys gathered once, a KV head per task, then the rows split over
        // the threads (each row's result is the same however they split).
        let mut keys = k::dense_attn::DenseKeys::new(segs, shape);
        let mut blocks: Vec<Option<_>> = keys.head_blocks_mut().into_iter().map(Some).collect();
        self.par_chunks_mut(&mut blocks, 1, |g, block| {
            if let Some(block) = block[0].take() {
                block.fill(g);
            }
        });
        drop(blocks);
        let min_rows = n_rows.div_ceil(self.n_threads()).max(16);
        self.par_rows_mut(out, wq, min_rows, |r0, dst| {
            keys.attend(&q[r0 * wq..][..dst.len()], dst);
        });
        Ok(())
    }

    fn swiglu(&self, gate: &mut [f32], up: &[f32], n: usize) -> Result<(), BackendError> {
        check_rows("swiglu", gate.len(), up.len(), n)?;
        let f = k::kernels().swiglu();
        self.par_rows_mut(gate, n, PAR_MIN_FLOATS.div_ceil(n), |r0, g| {
            let us = &up[r0 * n..][..g.len()];
            for (gr, ur) in g.chunks_exact_mut(n).zip(us.chunks_exact(n)) {
                f(gr, ur);
            }
        });
        Ok(())
    }

    fn matmul(
        &self,
        w: &QMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<(), BackendError> {
        self.matmul_group(&[*w], x, n_tokens, &mut [y])
    }

    fn matmul_group(
        &self,
        ws: &[QMatrix<'_>],
        x: &[f32],
        n_tokens: usize,
        ys: &mut [&mut [f32]],
    ) -> Result<(), BackendError> {
        let Some(first) = ws.first() else {
            return Ok(());
        };
        let n_in = first.n_in;
        if n_tokens > MATMUL_TOKEN_BLOCK && x.len() == n_tokens * n_in && ws.len() == ys.len() {
            // Each product depends on its row and token alone, so blocks of
            // tokens give the same bits, with their quantized activations
            // small enough to stay in L2 while every band of rows reads them.
            for t0 in (0..n_tokens).step_by(MATMUL_TOKEN_BLOCK) {
                let t1 = (t0 + MATMUL_TOKEN_BLOCK).min(n_tokens);
                let mut parts = Vec::with_capacity(ys.len());
                for (w, y) in ws.iter().zip(ys.iter_mut()) {
                    let len = y.len();
                    let y = y.get_mut(t0 * w.n_out..t1 * w.n_out).ok_or_else(|| {
                        BackendError::Shape {
                            op: "matmul",
                            detail: format!("y {len} floats for {n_tokens} tokens of {}", w.n_out),
                        }
                    })?;
                    parts.push(y);
                }
                self.matmul_group(ws, &x[t0 * n_in..t1 * n_in], t1 - t0, &mut parts)?;
            }
            return Ok(());
        }
        let act_ty = k::vec_dot_type(first.ty);
        if ws.iter().any(|w| k::vec_dot_type(w.ty) != act_ty) && ws.len() == ys.len() {
            // Different activation formats: nothing to share.
            for (w, y) in ws.iter().zip(ys.iter_mut()) {
                self.matmul_group(std::slice::from_ref(w), x, n_tokens, &mut [&mut **y])?;
            }
            return Ok(());
        }
        let shape_err = |detail: String| BackendError::Shape {
            op: "matmul",
            detail,
        };
        if ws.len() != ys.len() || x.len() != n_tokens * n_in {
            return Err(shape_err(format!(
                "{} matrices for {} outputs, x {} floats for {} tokens of {}",
                ws.len(),
                ys.len(),
                x.len(),
                n_tokens,
                n_in
            )));
        }
        let mut mats = Vec::with_capacity(ws.len());
        for (w, y) in ws.iter().zip(ys.iter()) {
            if y.len() != n_tokens * w.n_out {
                return Err(shape_err(format!(
                    "y {} floats for {} tokens of {}x{}",
                    y.len(),
                    n_tokens,
                    w.n_out,
                    w.n_in
                )));
            }
            mats.push(self.check(w, act_ty, n_in)?);
        }
        let a_row = act_ty
            .row_size(n_in as u64)
            .ok_or_else(|| shape_err(format!("{} row of {} elements", act_ty, n_in)))?
            as usize;
        let quantize = k::kernels()
            .get(act_ty)
            .map(|e| e.quantize_act)
            .ok_or(BackendError::Unsupported(first.ty, "cpu"))?;

        // Activations are quantized once per token, then shared by every
        // row of every matrix in the group.
        let mut act = vec![0u8; a_row * n_tokens];
        if n_tokens == 1 {
            quantize(x, &mut act);
        } else {
            let per = n_tokens.div_ceil(self.n_threads() * 2);
            self.par_chunks_mut(&mut act, per * a_row, |i, dst| {
                for (j, d) in dst.chunks_exact_mut(a_row).enumerate() {
                    let t = i * per + j;
                    quantize(&x[t * n_in..(t + 1) * n_in], d);
                }
            });
        }
        let act = &act[..];

        // Tasks: bands of rows of each matrix, numbered across the group.
        let table = k::kernels();
        let transpose = table.transpose();
        let chunks: Vec<usize> = mats
            .iter()
            .map(|m| {
                rows_per_task(
                    m.w.n_out,
                    self.n_threads(),
                    n_tokens,
                    table.tile_rows(m.w.ty),
                )
            })
            .collect();
        let mut first_task = Vec::with_capacity(mats.len() + 1);
        let mut n_tasks = 0;
        for (m, &c) in mats.iter().zip(&chunks) {
            first_task.push(n_tasks);
            n_tasks += m.w.n_out.div_ceil(c);
        }
        first_task.push(n_tasks);

        if n_tokens == 1 {
            let outs: Vec<SendPtr<f32>> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
            self.pool.run(n_tasks, &|task| {
                let g = first_task.partition_point(|&s| s <= task) - 1;
                let (m, chunk) = (&mats[g], chunks[g]);
                let r0 = (task - first_task[g]) * chunk;
                let r1 = (r0 + chunk).min(m.w.n_out);
                if let Some(tile) = m.tile {
                    // SAFETY: rows `r0..r1` of matrix `g` belong to this task alone.
                    let ys =
                        unsafe { std::slice::from_raw_parts_mut(outs[g].get().add(r0), r1 - r0) };
                    tile(n_in, &m.w.data[r0 * m.w_row..r1 * m.w_row], act, ys);
                    return;
                }
                for r in r0..r1 {
                    let wr = &m.w.data[r * m.w_row..(r + 1) * m.w_row];
                    let v = (m.dot)(n_in, wr, act);
                    // SAFETY: row `r` of matrix `g` belongs to this task alone.
                    unsafe { *outs[g].get().add(r) = v };
                }
            });
            return Ok(());
        }

        // Batched: each task multiplies a band of rows with every token (in
        // register tiles of rows x tokens where the table has a tiled
        // kernel, else row by row) into a transposed band, then scatters it
        // into its rows of `y`.
        let outs: Vec<SendPtr<f32>> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
        self.pool.run(n_tasks, &|task| {
            let g = first_task.partition_point(|&s| s <= task) - 1;
            let (m, chunk) = (&mats[g], chunks[g]);
            let r0 = (task - first_task[g]) * chunk;
            let rows = chunk.min(m.w.n_out - r0);
            BAND.with(|cell| {
                let mut guard = cell.borrow_mut();
                let bufs = &mut *guard;
                // Reused across calls: a fresh band of this size would come from
                // (and go back to) the kernel each time, page faults included.
                // Grown, never cleared: the kernels below write every entry.
                if bufs.band.len() < rows * n_tokens {
                    bufs.band.resize(rows * n_tokens, 0.0);
                }
                if bufs.block.len() < rows * SCATTER_TOKENS {
                    bufs.block.resize(rows * SCATTER_TOKENS, 0.0);
                }
                let band = &mut bufs.band[..rows * n_tokens];
                let wb = &m.w.data[r0 * m.w_row..(r0 + rows) * m.w_row];
                if let Some(tile) = m.tile {
                    tile(n_in, wb, act, band);
                } else {
                    for (j, row_out) in band.chunks_mut(n_tokens).enumerate() {
                        let wr = &wb[j * m.w_row..(j + 1) * m.w_row];
                        match m.batch {
                            Some(b) => b(n_in, wr, act, row_out),
                            None => {
                                for (t, o) in row_out.iter_mut().enumerate() {
                                    *o = (m.dot)(n_in, wr, &act[t * a_row..(t + 1) * a_row]);
                                }
                            }
                        }
                    }
                }
                let n_out = m.w.n_out;
                let out = outs[g].get();
                // A block of tokens at a time, transposed in L1, then copied
                // row by row into the tokens' outputs.
                for t0 in (0..n_tokens).step_by(SCATTER_TOKENS) {
                    let nt = SCATTER_TOKENS.min(n_tokens - t0);
                    let block = &mut bufs.block[..rows * nt];
                    transpose(&band[t0..], n_tokens, rows, nt, block);
                    for (i, src) in block.chunks_exact(rows).enumerate() {
                        // SAFETY: rows `r0..r0 + rows` of matrix `g` belong
                        // to this task alone, for every token.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(out.add((t0 + i) * n_out + r0), rows)
                        };
                        dst.copy_from_slice(src);
                    }
                }
            });
        });
        Ok(())
    }

    fn attention(
        &self,
        q: &[f32],
        kv: &KvSeq,
        layer: usize,
        s: AttnShape,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        self.attention_many(
            layer,
            &mut [AttnJob {
                q,
                kv,
                shape: s,
                out,
            }],
        )
    }

    fn attention_many(&self, layer: usize, jobs: &mut [AttnJob<'_>]) -> Result<(), BackendError> {
        for j in jobs.iter() {
            check_attention(j.q, j.kv, layer, &j.shape, j.out)?;
        }
        // llama.cpp's CPU flash attention takes two routes: batches of 64 or
        // more queries over an F16 cache go through an f32 tiled kernel,
        // smaller ones (and single-token decoding, and every batch over a
        // quantized or f32 cache) score each key in the key type's dot
        // product and accumulate the values in F16 (F16 values) or f32. We
        // follow the same split so that our numbers track the reference's,
        // rounding included. Long runs take the f32 route one by one (each
        // is parallel inside); the short ones (decoding steps) share one
        // parallel step, one task per few (sequence, token, head) items.
        // The caches are borrowed for the jobs' lifetime, apart from the
        // jobs themselves (whose outputs are written below).
        let rows: Vec<(Rows<'_>, Rows<'_>)> = jobs
            .iter()
            .map(|j| {
                let kv: &KvSeq = j.kv;
                (kv.rows(layer, Kind::K), kv.rows(layer, Kind::V))
            })
            .collect();
        let mut short = Vec::new();
        for (ji, j) in jobs.iter_mut().enumerate() {
            let (rk, rv) = &rows[ji];
            let f16 = rk.ty == KvType::F16 && rv.ty == KvType::F16;
            if j.shape.n_tokens >= FA_TILE_Q && f16 {
                self.attention_f32(j.q, rk, rv, j.shape, j.out);
            } else {
                short.push(ji);
            }
        }
        // Items are the query heads of one KV head of one token: each key
        // and value row is then read once for all of them (on SmolLM2 at a
        // depth of 4096, 3 groups on 2 threads decode at 35 tokens/s, 9
        // single heads at 29). With fewer such items than threads, single
        // heads instead (each head's arithmetic is the same either way).
        // A decoding token over many F16 or f32 keys has its keys split
        // into one run per thread, as llama.cpp splits them, each run's
        // softmax state merged afterwards: a single long sequence then
        // decodes on every thread. The split depends only on the thread
        // count and the keys, so a sequence decoded beside others gets the
        // bits it gets alone.
        let n_threads = self.n_threads();
        let splits: Vec<usize> = jobs
            .iter()
            .enumerate()
            .map(|(ji, j)| {
                let (rk, rv) = &rows[ji];
                let seen = j.shape.pos0 + j.shape.n_tokens;
                let splittable = j.shape.n_tokens == 1
                    && rk.ty == rv.ty
                    && matches!(rk.ty, KvType::F16 | KvType::F32)
                    && seen >= SPLIT_KV_MIN_KEYS;
                // (Single tokens never take the f32 route: they are short.)
                if splittable && n_threads > 1 {
                    n_threads
                } else {
                    1
                }
            })
            .collect();
        let groups: usize = short
            .iter()
            .map(|&ji| jobs[ji].shape.n_tokens * jobs[ji].shape.n_head_kv * splits[ji])
            .sum();
        let whole_groups = groups >= n_threads;
        // Partial softmax states of split jobs: per job, per run, per head
        // [max, sum, values...].
        let mut part_at = vec![0usize; jobs.len()];
        let mut n_part = 0;
        for &ji in &short {
            if splits[ji] > 1 {
                part_at[ji] = n_part;
                let s = jobs[ji].shape;
                n_part += splits[ji] * s.n_head * (2 + s.head_dim);
            }
        }
        let mut partials = vec![0f32; n_part];
        let mut items = Vec::new();
        for &ji in &short {
            let s = jobs[ji].shape;
            let g = s.n_head / s.n_head_kv;
            for t in 0..s.n_tokens {
                let seen = s.pos0 + t + 1;
                let n_runs = splits[ji];
                let run_len = seen.div_ceil(n_runs);
                for run in 0..n_runs {
                    let keys = (run * run_len).min(seen)..((run + 1) * run_len).min(seen);
                    if n_runs > 1 && keys.is_empty() {
                        continue;
                    }
                    let part = (n_runs > 1).then_some(run);
                    if whole_groups {
                        items.extend(
                            (0..s.n_head_kv).map(|kvh| (ji, t, kvh * g, g, keys.clone(), part)),
                        );
                    } else {
                        items.extend((0..s.n_head).map(|h| (ji, t, h, 1, keys.clone(), part)));
                    }
                }
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let outs: Vec<SendPtr<f32>> = jobs
            .iter_mut()
            .map(|j| SendPtr(j.out.as_mut_ptr()))
            .collect();
        let parts = SendPtr(partials.as_mut_ptr());
        let per_task = items.len().div_ceil(n_threads * 4).max(1);
        let jobs = &*jobs;
        self.pool.run(items.len().div_ceil(per_task), &|task| {
            let mut sc = AttnScratch::default();
            for (ji, t, h0, nh, keys, part) in items.iter().skip(task * per_task).take(per_task) {
                let (ji, t, h0, nh) = (*ji, *t, *h0, *nh);
                let j = &jobs[ji];
                let s = j.shape;
                let hd = s.head_dim;
                let kvh = h0 / (s.n_head / s.n_head_kv);
                let at = t * s.n_head * hd + h0 * hd;
                let (rk, rv) = &rows[ji];
                let q = &j.q[at..at + nh * hd];
                let dest = match part {
                    None => {
                        // SAFETY: heads `h0..h0 + nh` of token `t` of job
                        // `ji` belong to this item alone, and the job's
                        // output outlives the step.
                        Dest::Out(unsafe {
                            std::slice::from_raw_parts_mut(outs[ji].get().add(at), nh * hd)
                        })
                    }
                    Some(run) => {
                        let w = 2 + hd;
                        let off = part_at[ji] + (run * s.n_head + h0) * w;
                        // SAFETY: the partial states of heads `h0..h0 + nh`
                        // of this run of job `ji` belong to this item alone.
                        Dest::Partial(unsafe {
                            std::slice::from_raw_parts_mut(parts.get().add(off), nh * w)
                        })
                    }
                };
                attend_heads(q, hd, keys.clone(), rk, rv, kvh, s.scale, &mut sc, dest);
            }
        });
        for &ji in &short {
            let n_runs = splits[ji];
            if n_runs == 1 {
                continue;
            }
            let s = jobs[ji].shape;
            let (hd, w) = (s.head_dim, 2 + s.head_dim);
            let seen = s.pos0 + 1;
            let run_len = seen.div_ceil(n_runs);
            let part = &partials[part_at[ji]..part_at[ji] + n_runs * s.n_head * w];
            // SAFETY: the parallel step is over and wrote no split job's
            // output; it is written here alone.
            let out = unsafe { std::slice::from_raw_parts_mut(outs[ji].get(), s.n_head * hd) };
            for (h, o) in out.chunks_exact_mut(hd).enumerate() {
                let runs = (0..n_runs)
                    .filter(|r| r * run_len < seen)
                    .map(|r| &part[(r * s.n_head + h) * w..(r * s.n_head + h + 1) * w]);
                merge_runs(runs, o);
            }
        }
        Ok(())
    }
}

impl CpuBackend {
    /// The f32 route of one checked attention call over an F16 cache.
    /// Tasks are runs of tokens x one KV head, so each tile of keys and
    /// values is widened once for all the queries that read it.
    fn attention_f32(
        &self,
        q: &[f32],
        rk: &Rows<'_>,
        rv: &Rows<'_>,
        s: AttnShape,
        out: &mut [f32],
    ) {
        let hd = s.head_dim;
        let embd_q = s.n_head * hd;
        let group = s.n_head / s.n_head_kv;
        let per_task = s.n_tokens.div_ceil(self.n_threads() * 8).clamp(1, 16);
        let n_runs = s.n_tokens.div_ceil(per_task);
        let outp = SendPtr(out.as_mut_ptr());
        self.pool.run(n_runs * s.n_head_kv, &|task| {
            let (kvh, run) = (task % s.n_head_kv, task / s.n_head_kv);
            let t0 = run * per_task;
            let t1 = (t0 + per_task).min(s.n_tokens);
            let mut outs: Vec<&mut [f32]> = Vec::with_capacity((t1 - t0) * group);
            let mut qs: Vec<&[f32]> = Vec::with_capacity((t1 - t0) * group);
            let mut seen = Vec::with_capacity((t1 - t0) * group);
            for t in t0..t1 {
                for h in kvh * group..(kvh + 1) * group {
                    let at = t * embd_q + h * hd;
                    qs.push(&q[at..at + hd]);
                    // SAFETY: head `h` of token `t` belongs to this task
                    // alone (its KV head and token run).
                    outs.push(unsafe { std::slice::from_raw_parts_mut(outp.get().add(at), hd) });
                    seen.push(s.pos0 + t + 1);
                }
            }
            attend_f32_group(
                &qs,
                &seen,
                |p| rk.head_u16(p, kvh),
                |p| rv.head_u16(p, kvh),
                s.scale,
                &mut outs,
            );
        });
    }
}

/// Checks one attention call's shapes against its buffers and cache.
fn check_attention(
    q: &[f32],
    kv: &KvSeq,
    layer: usize,
    s: &AttnShape,
    out: &[f32],
) -> Result<(), BackendError> {
    let hd = s.head_dim;
    let n_kv = s.pos0 + s.n_tokens;
    let embd_q = s.n_head * hd;
    if s.n_head == 0
        || s.n_head_kv == 0
        || !s.n_head.is_multiple_of(s.n_head_kv)
        || q.len() != s.n_tokens * embd_q
        || out.len() != q.len()
        || kv.pool().layout().width() != s.n_head_kv * hd
        || kv.pool().layout().head_dim != hd
        || n_kv > kv.capacity()
        || layer >= kv.pool().layout().n_layer
    {
        return Err(BackendError::Shape {
            op: "attention",
            detail: format!(
                "{s:?} with q {} floats, cache {} wide with room for {}",
                q.len(),
                kv.pool().layout().width(),
                kv.capacity()
            ),
        });
    }
    Ok(())
}

/// Query rows per tile of llama.cpp's f32 flash-attention kernel
/// (`GGML_FA_TILE_Q`); smaller batches take its F16 route.
pub const FA_TILE_Q: usize = 64;

/// Keys from which a decoding token's attention over an F16 or f32 cache
/// is split over the threads (llama.cpp's split-KV decoding threshold).
pub const SPLIT_KV_MIN_KEYS: usize = 512;

/// Where [`attend_heads`] leaves its result.
enum Dest<'a> {
    /// The heads' outputs, normalised.
    Out(&'a mut [f32]),
    /// Per head, the softmax state of its run of keys: the running maximum,
    /// the sum of weights and the unnormalised values, in `f32`, for
    /// [`merge_runs`].
    Partial(&'a mut [f32]),
}

/// One head's output from its runs' softmax states (`[max, sum, values]`,
/// in key order), as llama.cpp's `ggml_flash_attn_ext_reduce_partials`
/// merges them.
fn merge_runs<'p>(runs: impl Iterator<Item = &'p [f32]>, out: &mut [f32]) {
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    out.fill(0.0);
    for p in runs {
        let (m_run, s_run, v) = (p[0], p[1], &p[2..]);
        if s_run == 0.0 {
            continue;
        }
        let m_new = m.max(m_run);
        let (so, sn) = ((m - m_new).exp(), (m_run - m_new).exp());
        for (o, &x) in out.iter_mut().zip(v) {
            *o = *o * so + x * sn;
        }
        sum = sum * so + s_run * sn;
        m = m_new;
    }
    if sum != 0.0 {
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Buffers of [`attend_heads`], grown to the largest group seen.
#[derive(Default)]
struct AttnScratch {
    q16: Vec<u16>,
    acc16: Vec<u16>,
    /// The queries in the key type's `vec_dot_type` (block caches).
    qq: Vec<u8>,
    acc32: Vec<f32>,
    v32: Vec<f32>,
    m: Vec<f32>,
    sum: Vec<f32>,
}

/// The attention of query heads `q` (`nh` rows of `hd`) that share KV head
/// `kvh`, with an online softmax each, as llama.cpp's
/// `flash_attn_ext_f16_one_chunk` computes one head: the query converted
/// once to the key type's `vec_dot_type` (F16 for an F16 cache, Q8_0 for
/// most block types) and each key scored with that type's dot product; F16
/// values summed in an F16 accumulator, any other value type widened to
/// f32 row by row and summed in f32. Each key and value row is read once
/// for all the heads; every head's arithmetic is what it would be alone.
#[allow(clippy::too_many_arguments)]
fn attend_heads(
    q: &[f32],
    hd: usize,
    keys: std::ops::Range<usize>,
    rk: &Rows<'_>,
    rv: &Rows<'_>,
    kvh: usize,
    scale: f32,
    sc: &mut AttnScratch,
    out: Dest<'_>,
) {
    let t = k::kernels();
    let nh = q.len() / hd;
    let AttnScratch {
        q16,
        acc16,
        qq,
        acc32,
        v32,
        m,
        sum,
    } = sc;
    m.clear();
    m.resize(nh, f32::NEG_INFINITY);
    sum.clear();
    sum.resize(nh, 0.0);
    let acc = Acc {
        hd,
        acc16,
        acc32,
        v32,
        m,
        sum,
    };
    if rk.ty == KvType::F16 {
        q16.resize(nh * hd, 0);
        (t.f32_to_f16_row())(q, q16);
        let dot = t.dot_f16();
        let q16 = &*q16;
        let score = |k: &[u16], i: usize| dot(k, &q16[i * hd..(i + 1) * hd]) * scale;
        accumulate(
            rk.heads_u16_in(kvh, keys.clone()),
            score,
            rv,
            kvh,
            keys,
            acc,
            out,
        );
    } else {
        let kk = rk
            .ty
            .kernels()
            .expect("the pool checked the type's kernels");
        let (qt, vec_dot) = (kk.vec_dot_type, kk.vec_dot.expect("checked"));
        let to_q = t.get(qt).expect("a vec_dot_type has kernels").quantize_act;
        let qb = hd / qt.block_size() * qt.type_size();
        qq.resize(nh * qb, 0);
        for (src, dst) in q.chunks_exact(hd).zip(qq.chunks_exact_mut(qb)) {
            to_q(src, dst);
        }
        let qq = &*qq;
        let score = |k: &[u8], i: usize| vec_dot(hd, k, &qq[i * qb..(i + 1) * qb]) * scale;
        accumulate(
            rk.heads_in(kvh, keys.clone()),
            score,
            rv,
            kvh,
            keys,
            acc,
            out,
        );
    }
}

/// The running state of [`attend_heads`]'s heads.
struct Acc<'a> {
    hd: usize,
    acc16: &'a mut Vec<u16>,
    acc32: &'a mut Vec<f32>,
    v32: &'a mut Vec<f32>,
    m: &'a mut [f32],
    sum: &'a mut [f32],
}

/// One key of [`accumulate`]'s online softmax for head state `m`, `sum`:
/// returns the factor the head's accumulator is scaled by and the weight
/// of this key's value, as llama.cpp's `one_chunk` computes them.
#[inline]
fn softmax_step(s: f32, m: &mut f32, sum: &mut f32) -> (f32, f32) {
    let (mut ms, mut vs) = (1f32, 1f32);
    if s > *m {
        let m_old = *m;
        *m = s;
        ms = (m_old - s).exp();
    } else {
        vs = (s - *m).exp();
    }
    *sum = *sum * ms + vs;
    (ms, vs)
}

/// The online softmax of [`attend_heads`] over `keys` (the positions of
/// `range` of KV head `kvh`, in order), `score(key, head)` (scale applied),
/// values from `rv`.
fn accumulate<'k, K: Copy + 'k>(
    keys: impl Iterator<Item = K>,
    score: impl Fn(K, usize) -> f32,
    rv: &Rows<'k>,
    kvh: usize,
    range: std::ops::Range<usize>,
    acc: Acc<'_>,
    out: Dest<'_>,
) {
    let t = k::kernels();
    let Acc {
        hd,
        acc16,
        acc32,
        v32,
        m,
        sum,
    } = acc;
    let nh = m.len();
    if rv.ty == KvType::F16 {
        let (scale_acc, mad) = (t.scale_f16(), t.mad_f16());
        acc16.clear();
        acc16.resize(nh * hd, 0);
        for (k, v) in keys.zip(rv.heads_u16_in(kvh, range)) {
            for (i, a) in acc16.chunks_exact_mut(hd).enumerate() {
                let (ms, vs) = softmax_step(score(k, i), &mut m[i], &mut sum[i]);
                if ms != 1.0 {
                    scale_acc(a, ms);
                }
                mad(a, v, vs);
            }
        }
        finish_heads(
            hd,
            m,
            sum,
            acc16.chunks_exact(hd),
            |a: &[u16], d| k::convert::f16_to_f32(a[d]),
            out,
        );
        return;
    }
    let widen = rv
        .ty
        .kernels()
        .expect("the pool checked the type's kernels")
        .dequantize;
    acc32.clear();
    acc32.resize(nh * hd, 0.0);
    v32.resize(hd, 0.0);
    for (k, v) in keys.zip(rv.heads_in(kvh, range)) {
        widen(v, v32);
        for (i, a) in acc32.chunks_exact_mut(hd).enumerate() {
            let (ms, vs) = softmax_step(score(k, i), &mut m[i], &mut sum[i]);
            if ms != 1.0 {
                a.iter_mut().for_each(|x| *x *= ms);
            }
            k::ops::add_scaled(a, vs, v32);
        }
    }
    finish_heads(hd, m, sum, acc32.chunks_exact(hd), |a: &[f32], d| a[d], out);
}

/// Writes each head's accumulated values (`acc`, read as `f32` by `get`):
/// normalised into the output, or with the softmax state as a run's
/// partial result.
fn finish_heads<'a, T: 'a>(
    hd: usize,
    m: &[f32],
    sum: &[f32],
    acc: impl Iterator<Item = &'a [T]>,
    get: impl Fn(&[T], usize) -> f32,
    out: Dest<'_>,
) {
    match out {
        Dest::Out(out) => {
            for (i, (o, a)) in out.chunks_exact_mut(hd).zip(acc).enumerate() {
                let inv = if sum[i] == 0.0 { 0.0 } else { 1.0 / sum[i] };
                for (d, o) in o.iter_mut().enumerate() {
                    *o = get(a, d) * inv;
                }
            }
        }
        Dest::Partial(p) => {
            for (i, (p, a)) in p.chunks_exact_mut(2 + hd).zip(acc).enumerate() {
                p[0] = m[i];
                p[1] = sum[i];
                for (d, x) in p[2..].iter_mut().enumerate() {
                    *x = get(a, d);
                }
            }
        }
    }
}

/// Keys per tile of llama.cpp's f32 flash-attention kernel (`GGML_FA_TILE_KV`).
const FA_TILE_KV: usize = 64;

/// Attention in `f32` of several queries that read the same KV head, as
/// llama.cpp's tiled flash-attention kernel does each: keys in tiles of 64,
/// an online softmax across tiles, values accumulated in `f32`. Query `i`
/// sees keys `0..seen[i]` (non-decreasing in `i`) and its result goes to
/// `outs[i]`. Each tile of keys and values is widened to `f32` once for all
/// the queries, and the table's attention tiles take the queries four at a
/// time; each query's numbers do not depend on the others.
fn attend_f32_group<'a>(
    qs: &[&[f32]],
    seen: &[usize],
    key: impl Fn(usize) -> &'a [u16],
    val: impl Fn(usize) -> &'a [u16],
    scale: f32,
    outs: &mut [&mut [f32]],
) {
    let t = k::kernels();
    let (widen, transpose, qk, pv, exp_sum) = (
        t.f16_to_f32_row(),
        t.transpose(),
        t.qk_tile(),
        t.pv_tile(),
        t.exp_sum(),
    );
    let Some(hd) = qs.first().map(|q| q.len()) else {
        return;
    };
    let n = qs.len();
    debug_assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    let mut qbuf = Vec::with_capacity(n * hd);
    for q in qs {
        qbuf.extend_from_slice(q);
    }
    let mut obuf = vec![0f32; n * hd];
    let mut m = vec![f32::NEG_INFINITY; n];
    let mut sum = vec![0f32; n];
    let mut scores = vec![0f32; n * FA_TILE_KV];
    let mut krows = vec![0f32; FA_TILE_KV * hd];
    let mut kt = vec![0f32; FA_TILE_KV * hd];
    let mut vt = vec![0f32; FA_TILE_KV * hd];
    let max_seen = seen.last().copied().unwrap_or(0);
    // Whole tiles of 64 keys, as llama.cpp's: scores past a query's keys
    // are masked, so softmax rows keep their length (and with it the
    // portable `exp` sum's grouping) whatever the query sees.
    const NK: usize = FA_TILE_KV;
    for start in (0..max_seen).step_by(NK) {
        let nt = (max_seen - start).min(NK);
        for j in 0..nt {
            widen(key(start + j), &mut krows[j * hd..(j + 1) * hd]);
            widen(val(start + j), &mut vt[j * hd..(j + 1) * hd]);
        }
        if nt < NK {
            // Masked keys weigh zero; zeros keep their products zero.
            krows[nt * hd..].fill(0.0);
            vt[nt * hd..].fill(0.0);
        }
        // Keys as columns: a score tile then needs no horizontal sums.
        transpose(&krows, hd, NK, hd, &mut kt);
        // The queries that see this tile: a suffix, as `seen` grows.
        let first = seen.partition_point(|&s| s <= start);
        let sc = &mut scores[first * NK..];
        qk(&qbuf[first * hd..], hd, &kt, NK, scale, sc);
        for (i, row) in (first..n).zip(sc.chunks_exact_mut(NK)) {
            let nn = (seen[i] - start).min(NK);
            row[nn..].fill(f32::NEG_INFINITY);
            let tile_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m[i].max(tile_max);
            if m_new > m[i] {
                let ms = (m[i] - m_new).exp();
                obuf[i * hd..(i + 1) * hd].iter_mut().for_each(|v| *v *= ms);
                sum[i] *= ms;
            }
            m[i] = m_new;
            // Masked keys come out of `exp` as zeros and add nothing below.
            sum[i] = (sum[i] as f64 + exp_sum(row, m_new)) as f32;
        }
        pv(sc, NK, &vt, hd, &mut obuf[first * hd..]);
    }
    for ((o, &s), acc) in outs.iter_mut().zip(&sum).zip(obuf.chunks_exact(hd)) {
        let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
        for (v, &a) in o.iter_mut().zip(acc) {
            *v = a * inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rows_per_task;
    use crate::{Backend, BackendError, CpuBackend};
    use edgellama_kernels as k;

    /// Floats spread over a few orders of magnitude, both signs.
    fn floats(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * 8.0 * if s & 1 == 0 { 1.0 } else { 0.01 }
            })
            .collect()
    }

    #[test]
    fn parallel_norm_and_swiglu_give_the_kernels_bits_row_by_row() {
        for threads in 1..=3 {
            let be = CpuBackend::new(threads).unwrap();
            for (n, rows) in [
                (576usize, 1usize),
                (576, 3),
                (576, 17),
                (37, 64),
                (2048, 9),
                (1531, 40),
            ] {
                let x = floats(n * rows, n as u64);
                let w = floats(n, 7);
                let mut want = vec![0f32; n * rows];
                for (xr, or) in x.chunks_exact(n).zip(want.chunks_exact_mut(n)) {
                    k::ops::rms_norm(xr, &w, 1e-5, or);
                }
                let mut got = vec![f32::NAN; n * rows];
                be.rms_norm(&x, &w, 1e-5, &mut got).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "rms_norm {threads} threads, {rows}x{n}"
                );

                let up = floats(n * rows, 3);
                let mut want = x.clone();
                for (g, u) in want.chunks_exact_mut(n).zip(up.chunks_exact(n)) {
                    (k::kernels().swiglu())(g, u);
                }
                let mut got = x.clone();
                be.swiglu(&mut got, &up, n).unwrap();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "swiglu {threads} threads, {rows}x{n}"
                );
            }
        }
    }

    #[test]
    fn norm_and_swiglu_shape_errors() {
        let be = CpuBackend::new(2).unwrap();
        let shape = |r: Result<(), BackendError>| matches!(r, Err(BackendError::Shape { .. }));
        let mut out = vec![0f32; 8];
        assert!(shape(be.rms_norm(&[0.0; 8], &[1.0; 3], 1e-5, &mut out)));
        assert!(shape(be.rms_norm(&[0.0; 8], &[], 1e-5, &mut out)));
        assert!(shape(be.rms_norm(&[0.0; 4], &[1.0; 4], 1e-5, &mut out)));
        assert!(shape(be.swiglu(&mut out, &[0.0; 7], 7)));
        assert!(shape(be.swiglu(&mut out, &[0.0; 8], 3)));
        assert!(shape(be.swiglu(&mut out, &[0.0; 8], 0)));
        assert!(be.rms_norm(&[], &[1.0; 4], 1e-5, &mut []).is_ok());
    }

    #[test]
    fn batched_bands_are_whole_row_blocks_in_equal_shares() {
        // SmolLM2's 576 rows in 16-row groups on 2 threads: 12 equal tasks.
        assert_eq!(rows_per_task(576, 2, 512, 16), 48);
        // Pairs of rows: 8 tasks of 72, as before row blocks existed.
        assert_eq!(rows_per_task(576, 2, 512, 2), 72);
        assert_eq!(rows_per_task(2048, 2, 512, 16), 256);
        assert_eq!(rows_per_task(192, 2, 512, 16), 32);
        // No equal split: the plain share, still whole blocks.
        assert_eq!(rows_per_task(49, 3, 8, 16), 16);
        // Decoding ignores the block: even, at least 16 rows.
        assert_eq!(rows_per_task(576, 2, 1, 16), 72);
        assert_eq!(rows_per_task(40, 2, 1, 16), 16);
        // Every row is covered whatever the split.
        for n_out in [1usize, 7, 100, 576, 1537, 8192] {
            for threads in 1..=5 {
                for unit in [1usize, 2, 4, 16] {
                    let r = rows_per_task(n_out, threads, 64, unit);
                    assert!(
                        r > 0 && r.is_multiple_of(unit),
                        "{n_out} {threads} {unit}: {r}"
                    );
                }
            }
        }
    }
}
