//! Attention over keys and values held as f32 rows outside the KV cache:
//! the vision tower's bidirectional attention and the text model's
//! cross-attention to image features. Every query attends to all keys of a
//! list of segments (runs of key rows), so a mask that allows ranges of keys
//! costs nothing: padding pairs in the vision tower and the images a text
//! row sees are both lists of ranges.
//!
//! Each query row is computed alone, so splitting rows over threads never
//! changes a result. Many rows (the vision tower's thousands) go through
//! the dispatch table's flash-style block: [`DenseKeys`] gathers each KV
//! head's keys once into tiles, and the block runs an online softmax over
//! them, in `f32` or, where the call asks for it and the CPU has them,
//! with bfloat16 products. A few rows (a decoding step's cross-attention)
//! read the key rows where they lie.

/// A run of key and value rows, `n_head_kv * head_dim` floats each.
#[derive(Debug, Clone, Copy)]
pub struct KvSegment<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// The arithmetic of a dense attention call's two products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenseProducts {
    /// `f32` throughout.
    #[default]
    F32,
    /// Many query rows take queries, keys, values and softmax weights
    /// rounded to bfloat16, summed in `f32`, where the CPU multiplies
    /// bfloat16 pairs natively (twice the `f32` rate); `f32` elsewhere and
    /// for a few rows.
    Bf16,
}

/// Head layout of a dense attention call.
#[derive(Debug, Clone, Copy)]
pub struct DenseShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub products: DenseProducts,
}

impl DenseShape {
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// `out[i] = softmax_j(q_i . k_j * scale) v_j` per head over every key of
/// `segs` (query head `h` reads KV head `h / (n_head / n_head_kv)`), for the
/// query rows `q` (`[n][n_head * head_dim]`). With no keys at all the output
/// rows are 0. `scores` is scratch, grown as needed. On one thread; a
/// caller with a pool fills [`DenseKeys`] per head and attends per rows.
pub fn attention_segments(
    q: &[f32],
    segs: &[KvSegment<'_>],
    shape: DenseShape,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    if !uses_tiles(q.len() / shape.q_width().max(1)) {
        return attention_rows(q, segs, shape, scores, out);
    }
    let mut keys = DenseKeys::new(segs, shape);
    for (g, block) in keys.head_blocks_mut().into_iter().enumerate() {
        block.fill(g);
    }
    keys.attend(q, out);
}

/// Whether `n_rows` query rows go through [`DenseKeys`] (else one row at a
/// time, reading the keys where they lie).
pub fn uses_tiles(n_rows: usize) -> bool {
    n_rows >= TILED_MIN_ROWS
}

/// Query rows from which the tiled path pays for gathering the keys (the
/// vision tower's seven padding rows per tile already do).
const TILED_MIN_ROWS: usize = 4;
/// Query rows of one head handed to the block kernel at a time (their
/// copies stay in L2).
const ROW_CHUNK: usize = 256;

/// The keys and values of one dense attention call, gathered per KV head
/// into the block kernel's layouts: `f32` key tiles (values read in place
/// when they are one segment, else gathered beside them), or bfloat16
/// pairs of both where the call asks for bfloat16 products and the CPU has
/// them. Filled head by head (in parallel where the caller has threads),
/// then read by any number of row ranges.
pub struct DenseKeys<'a> {
    shape: DenseShape,
    keys: Vec<(&'a [f32], &'a [f32])>,
    /// Values read in place: the one non-empty segment's.
    in_place: Option<&'a [f32]>,
    route: Route,
}

enum Route {
    F32 {
        buf: Vec<f32>,
        per_head: usize,
    },
    Bf16 {
        f: crate::AttendBlockBf16Fn,
        buf: Vec<u16>,
        per_head: usize,
    },
}

/// One KV head's part of [`DenseKeys`], to be filled.
pub enum HeadBlock<'k, 'a> {
    F32 {
        keys: &'k [(&'a [f32], &'a [f32])],
        hd: usize,
        gather_v: bool,
        buf: &'k mut [f32],
    },
    Bf16 {
        keys: &'k [(&'a [f32], &'a [f32])],
        hd: usize,
        buf: &'k mut [u16],
    },
}

impl<'a> DenseKeys<'a> {
    /// Buffers for the keys of `segs` (not yet filled).
    pub fn new(segs: &[KvSegment<'a>], shape: DenseShape) -> DenseKeys<'a> {
        use crate::scalar::attn::attend_bf16_len;
        let (hd, wkv) = (shape.head_dim, shape.kv_width());
        let keys: Vec<(&[f32], &[f32])> = segs
            .iter()
            .flat_map(|s| {
                s.k.chunks_exact(wkv.max(1))
                    .zip(s.v.chunks_exact(wkv.max(1)))
            })
            .collect();
        let n_keys = keys.len();
        let mut whole = segs.iter().filter(|s| !s.k.is_empty());
        let in_place = match (whole.next(), whole.next()) {
            (Some(s), None) => Some(s.v),
            _ => None,
        };
        let n_kv = shape.n_head_kv;
        let route = match (shape.products, crate::kernels().attend_block_bf16()) {
            (DenseProducts::Bf16, Some(f)) => {
                let per_head = 2 * attend_bf16_len(n_keys, hd);
                Route::Bf16 {
                    f,
                    buf: vec![0; per_head * n_kv],
                    per_head,
                }
            }
            _ => {
                let per_head = n_keys * hd * if in_place.is_some() { 1 } else { 2 };
                Route::F32 {
                    buf: vec![0.0; per_head * n_kv],
                    per_head,
                }
            }
        };
        DenseKeys {
            shape,
            keys,
            in_place,
            route,
        }
    }

    /// Each KV head's part, in order, to fill with [`HeadBlock::fill`].
    pub fn head_blocks_mut(&mut self) -> Vec<HeadBlock<'_, 'a>> {
        let (keys, hd) = (&self.keys[..], self.shape.head_dim);
        let gather_v = self.in_place.is_none();
        match &mut self.route {
            Route::F32 { buf, per_head } => buf
                .chunks_mut((*per_head).max(1))
                .map(|buf| HeadBlock::F32 {
                    keys,
                    hd,
                    gather_v,
                    buf,
                })
                .collect(),
            Route::Bf16 { buf, per_head, .. } => buf
                .chunks_mut((*per_head).max(1))
                .map(|buf| HeadBlock::Bf16 { keys, hd, buf })
                .collect(),
        }
    }

    /// Attention of the query rows `q` (`[n][n_head * head_dim]`) into
    /// `out`, over keys already filled.
    pub fn attend(&self, q: &[f32], out: &mut [f32]) {
        let shape = self.shape;
        let (hd, wq, wkv) = (shape.head_dim, shape.q_width(), shape.kv_width());
        let group = shape.n_head / shape.n_head_kv.max(1);
        let (n_q, n_keys) = (q.len() / wq.max(1), self.keys.len());
        if n_keys == 0 {
            out.iter_mut().for_each(|v| *v = 0.0);
            return;
        }
        let attend_f32 = crate::kernels().attend_block();
        let mut qb = vec![0f32; ROW_CHUNK.min(n_q) * hd];
        let mut ob = vec![0f32; ROW_CHUNK.min(n_q) * hd];
        for h in 0..shape.n_head {
            let g = h / group;
            for i0 in (0..n_q).step_by(ROW_CHUNK) {
                let m = ROW_CHUNK.min(n_q - i0);
                for r in 0..m {
                    let src = (i0 + r) * wq + h * hd;
                    qb[r * hd..(r + 1) * hd].copy_from_slice(&q[src..src + hd]);
                }
                let (qs, os) = (&qb[..m * hd], &mut ob[..m * hd]);
                match &self.route {
                    Route::F32 { buf, per_head } => {
                        let block = &buf[g * per_head..(g + 1) * per_head];
                        let (kt, rest) = block.split_at(n_keys * hd);
                        match self.in_place {
                            Some(v) => {
                                attend_f32(qs, hd, kt, &v[g * hd..], wkv, n_keys, shape.scale, os)
                            }
                            None => attend_f32(qs, hd, kt, rest, hd, n_keys, shape.scale, os),
                        }
                    }
                    Route::Bf16 { f, buf, per_head } => {
                        let block = &buf[g * per_head..(g + 1) * per_head];
                        let (kp, vp) = block.split_at(per_head / 2);
                        f(qs, hd, kp, vp, n_keys, shape.scale, os)
                    }
                }
                for r in 0..m {
                    let dst = (i0 + r) * wq + h * hd;
                    out[dst..dst + hd].copy_from_slice(&ob[r * hd..(r + 1) * hd]);
                }
            }
        }
    }
}

impl HeadBlock<'_, '_> {
    /// Gathers KV head `g`'s keys (and values where they are not read in
    /// place) into this part.
    pub fn fill(self, g: usize) {
        use crate::scalar::attn::{attend_bf16_len, ATTEND_KEY_TILE};
        match self {
            HeadBlock::F32 {
                keys,
                hd,
                gather_v,
                buf,
            } => {
                let n_keys = keys.len();
                let (kt, vg) = buf.split_at_mut(n_keys * hd);
                let mut rows = vec![0f32; ATTEND_KEY_TILE * hd];
                for t0 in (0..n_keys).step_by(ATTEND_KEY_TILE) {
                    let n = ATTEND_KEY_TILE.min(n_keys - t0);
                    let tile = &keys[t0..t0 + n];
                    transpose_keys(tile, g, hd, &mut rows, &mut kt[t0 * hd..(t0 + n) * hd]);
                }
                if gather_v {
                    for (j, (_, v)) in keys.iter().enumerate() {
                        vg[j * hd..(j + 1) * hd].copy_from_slice(&v[g * hd..(g + 1) * hd]);
                    }
                }
            }
            HeadBlock::Bf16 { keys, hd, buf } => {
                let n_keys = keys.len();
                let hp = hd.next_multiple_of(2);
                let (kp, vp) = buf.split_at_mut(attend_bf16_len(n_keys, hd));
                let mut rows = vec![0f32; ATTEND_KEY_TILE * hd];
                let mut tr = vec![0f32; ATTEND_KEY_TILE * hd];
                for t0 in (0..n_keys).step_by(ATTEND_KEY_TILE) {
                    let n = ATTEND_KEY_TILE.min(n_keys - t0);
                    let (kt, vt) = (&mut kp[t0 * hp..], &mut vp[t0 * hp..]);
                    // Keys: the tile's rows transposed (a row per
                    // dimension), then rows 2p and 2p + 1 interleaved (an
                    // odd head's last partner left 0).
                    transpose_keys(&keys[t0..t0 + n], g, hd, &mut rows, &mut tr[..n * hd]);
                    for (p, dst) in kt[..hd.div_ceil(2) * n * 2]
                        .chunks_exact_mut(n * 2)
                        .enumerate()
                    {
                        let row = |d: usize| (d < hd).then(|| &tr[d * n..(d + 1) * n]);
                        interleave_bf16(dst, &tr[2 * p * n..(2 * p + 1) * n], row(2 * p + 1));
                    }
                    // Values: rows c and c + 1 interleaved (an odd tile's
                    // last partner left 0).
                    for c in (0..n).step_by(2) {
                        let dst = &mut vt[(c / 2) * hd * 2..(c / 2 + 1) * hd * 2];
                        let row = |c: usize| &keys[t0 + c].1[g * hd..(g + 1) * hd];
                        interleave_bf16(dst, row(c), (c + 1 < n).then(|| row(c + 1)));
                    }
                }
            }
        }
    }
}

/// KV head `g`'s part of the key rows `tile`, transposed into `dst` (a row
/// per dimension), through `rows` (scratch of the tile's rows side by side).
fn transpose_keys(
    tile: &[(&[f32], &[f32])],
    g: usize,
    hd: usize,
    rows: &mut [f32],
    dst: &mut [f32],
) {
    let n = tile.len();
    for (c, (k, _)) in tile.iter().enumerate() {
        rows[c * hd..(c + 1) * hd].copy_from_slice(&k[g * hd..(g + 1) * hd]);
    }
    (crate::kernels().transpose())(&rows[..n * hd], hd, n, hd, dst);
}

/// `dst[2i] = bf16(a[i])`, `dst[2i + 1] = bf16(b[i])`: two rows as the
/// pairs of one 32-bit lane each; without `b` the second halves are left
/// as they are (0 in a fresh buffer).
fn interleave_bf16(dst: &mut [u16], a: &[f32], b: Option<&[f32]>) {
    use crate::scalar::attn::bf16_bits;
    match b {
        Some(b) => {
            for ((d, &x), &y) in dst.chunks_exact_mut(2).zip(a).zip(b) {
                d[0] = bf16_bits(x);
                d[1] = bf16_bits(y);
            }
        }
        None => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(a) {
                d[0] = bf16_bits(x);
            }
        }
    }
}

/// [`attention_segments`] one query row and head at a time, reading each
/// key row in place: for few rows, where gathering tiles would cost more
/// than it saves.
fn attention_rows(
    q: &[f32],
    segs: &[KvSegment<'_>],
    shape: DenseShape,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (hd, wq, wkv) = (shape.head_dim, shape.q_width(), shape.kv_width());
    let group = shape.n_head / shape.n_head_kv.max(1);
    let n_keys: usize = segs.iter().map(|s| s.k.len() / wkv).sum();
    scores.resize(n_keys, 0.0);
    for (qr, or) in q.chunks_exact(wq).zip(out.chunks_exact_mut(wq)) {
        for h in 0..shape.n_head {
            let kvo = (h / group) * hd;
            let qh = &qr[h * hd..(h + 1) * hd];
            let oh = &mut or[h * hd..(h + 1) * hd];
            let mut j = 0;
            let mut max = f32::NEG_INFINITY;
            for s in segs {
                for kr in s.k.chunks_exact(wkv) {
                    let d = dot(qh, &kr[kvo..kvo + hd]) * shape.scale;
                    max = max.max(d);
                    scores[j] = d;
                    j += 1;
                }
            }
            oh.iter_mut().for_each(|v| *v = 0.0);
            if n_keys == 0 {
                continue;
            }
            let mut sum = 0f64;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc as f64;
            }
            let mut j = 0;
            for s in segs {
                for vr in s.v.chunks_exact(wkv) {
                    let p = scores[j];
                    for (o, &v) in oh.iter_mut().zip(&vr[kvo..kvo + hd]) {
                        *o += p * v;
                    }
                    j += 1;
                }
            }
            let inv = (1.0 / sum) as f32;
            oh.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// A dot product in eight independent lanes (which the compiler keeps in
/// vector registers), then the tail.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention written out in f64 from the definition.
    fn reference(q: &[f32], k: &[f32], v: &[f32], shape: DenseShape) -> Vec<f64> {
        let (hd, wq, wkv) = (shape.head_dim, shape.q_width(), shape.kv_width());
        let n_k = k.len() / wkv;
        let group = shape.n_head / shape.n_head_kv;
        let mut out = vec![0f64; q.len()];
        for (i, qr) in q.chunks_exact(wq).enumerate() {
            for h in 0..shape.n_head {
                let g = h / group;
                let s: Vec<f64> = (0..n_k)
                    .map(|j| {
                        (0..hd)
                            .map(|d| qr[h * hd + d] as f64 * k[j * wkv + g * hd + d] as f64)
                            .sum::<f64>()
                            * shape.scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    out[i * wq + h * hd + d] = (0..n_k)
                        .map(|j| e[j] * v[j * wkv + g * hd + d] as f64)
                        .sum::<f64>()
                        / z;
                }
            }
        }
        out
    }

    fn rand(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_definition_with_segments_and_gqa() {
        let mut seed = 7;
        // head_dim 13 exercises the dot product's tail.
        for (n_head, n_head_kv, hd) in [(4, 2, 13), (2, 2, 8), (6, 1, 20)] {
            let shape = DenseShape {
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                products: DenseProducts::F32,
            };
            let (n_q, n_k) = (5, 23);
            check_against_reference(shape, n_q, n_k, &mut seed);
            // Enough rows and keys for the tiled path, with ragged tiles
            // and blocks (600 keys: two full tiles and a part).
            check_against_reference(shape, 37, 600, &mut seed);
        }
    }

    #[test]
    fn bf16_products_match_definition_within_bf16_rounding() {
        let mut seed = 11;
        // Odd head widths and ragged tiles; the cut segments gather values.
        for (n_head, n_head_kv, hd) in [(4, 2, 13), (2, 2, 80), (6, 1, 20)] {
            let shape = DenseShape {
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                products: DenseProducts::Bf16,
            };
            check_within(shape, 37, 301, &mut seed, 3e-2);
            check_within(shape, 16, 97, &mut seed, 3e-2);
        }
    }

    fn check_against_reference(shape: DenseShape, n_q: usize, n_k: usize, seed: &mut u64) {
        check_within(shape, n_q, n_k, seed, 1e-5)
    }

    fn check_within(shape: DenseShape, n_q: usize, n_k: usize, seed: &mut u64, tol: f64) {
        {
            let q = rand(n_q * shape.q_width(), seed);
            let k = rand(n_k * shape.kv_width(), seed);
            let v = rand(n_k * shape.kv_width(), seed);
            let want = reference(&q, &k, &v, shape);
            // The same keys whole and cut into three segments.
            let w = shape.kv_width();
            let whole = [KvSegment { k: &k, v: &v }];
            let cut = [
                KvSegment {
                    k: &k[..4 * w],
                    v: &v[..4 * w],
                },
                KvSegment {
                    k: &k[4 * w..4 * w],
                    v: &v[4 * w..4 * w],
                },
                KvSegment {
                    k: &k[4 * w..],
                    v: &v[4 * w..],
                },
            ];
            for segs in [&whole[..], &cut[..]] {
                let mut out = vec![0f32; q.len()];
                attention_segments(&q, segs, shape, &mut Vec::new(), &mut out);
                for (g, w) in out.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() < tol, "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn no_keys_gives_zero_rows() {
        let shape = DenseShape {
            n_head: 2,
            n_head_kv: 1,
            head_dim: 4,
            scale: 0.5,
            products: DenseProducts::F32,
        };
        let q = vec![1.0; 8];
        let mut out = vec![9.0; 8];
        attention_segments(&q, &[], shape, &mut Vec::new(), &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
