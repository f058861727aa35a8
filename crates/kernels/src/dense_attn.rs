//! Attention over keys and values held as f32 rows outside the KV cache:
//! the vision tower's bidirectional attention and the text model's
//! cross-attention to image features. Every query attends to all keys of a
//! list of segments (runs of key rows), so a mask that allows ranges of keys
//! costs nothing: padding pairs in the vision tower and the images a text
//! row sees are both lists of ranges.
//!
//! Each query row is computed alone, so splitting rows over threads never
//! changes a result. Many rows (the vision tower's thousands) go through
//! the dispatch table's register-blocked score and value tiles, keys taken
//! in tiles that stay in cache; a few rows (a decoding step's
//! cross-attention) read the key rows where they lie.

/// A run of key and value rows, `n_head_kv * head_dim` floats each.
#[derive(Debug, Clone, Copy)]
pub struct KvSegment<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Head layout of a dense attention call.
#[derive(Debug, Clone, Copy)]
pub struct DenseShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
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
/// rows are 0. `scores` is scratch, grown as needed.
pub fn attention_segments(
    q: &[f32],
    segs: &[KvSegment<'_>],
    shape: DenseShape,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    if q.len() / shape.q_width().max(1) < TILED_MIN_ROWS {
        attention_rows(q, segs, shape, scores, out)
    } else {
        attention_tiled(q, segs, shape, out)
    }
}

/// Query rows from which the tiled path pays for gathering the keys.
const TILED_MIN_ROWS: usize = 16;
/// Query rows of one head handed to the block kernel at a time (their
/// copies stay in L2).
const ROW_CHUNK: usize = 256;

/// [`attention_segments`] through the table's `attend_block`: per KV head
/// the keys are gathered once into its tiles (transposed), the values read
/// in place when they are one segment (gathered otherwise), and each query
/// head's rows go through the block kernel a chunk at a time.
fn attention_tiled(q: &[f32], segs: &[KvSegment<'_>], shape: DenseShape, out: &mut [f32]) {
    use crate::scalar::attn::{attend_key_tile, ATTEND_KEY_TILE};
    let attend = crate::kernels().attend_block();
    let (hd, wq, wkv) = (shape.head_dim, shape.q_width(), shape.kv_width());
    let group = shape.n_head / shape.n_head_kv.max(1);
    let n_q = q.len() / wq;
    let keys: Vec<(&[f32], &[f32])> = segs
        .iter()
        .flat_map(|s| s.k.chunks_exact(wkv).zip(s.v.chunks_exact(wkv)))
        .collect();
    let n_keys = keys.len();
    if n_keys == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let whole: Vec<&KvSegment<'_>> = segs.iter().filter(|s| !s.k.is_empty()).collect();
    let in_place = whole.len() == 1;
    let mut kt = vec![0f32; n_keys * hd];
    let mut vg = if in_place {
        Vec::new()
    } else {
        vec![0f32; n_keys * hd]
    };
    let mut qb = vec![0f32; ROW_CHUNK.min(n_q) * hd];
    let mut ob = vec![0f32; ROW_CHUNK.min(n_q) * hd];
    // Where each segment's keys start among all keys.
    let mut starts = Vec::with_capacity(whole.len());
    let mut at = 0;
    for s in &whole {
        starts.push(at);
        at += s.k.len() / wkv;
    }
    let transpose = crate::kernels().transpose();
    for g in 0..shape.n_head_kv {
        for t0 in (0..n_keys).step_by(ATTEND_KEY_TILE) {
            let (base, n) = attend_key_tile(t0, n_keys, hd);
            let dst = &mut kt[base..base + n * hd];
            // A tile inside one segment is one strided transpose.
            let si = starts.partition_point(|&st| st <= t0) - 1;
            let seg_end = starts[si] + whole[si].k.len() / wkv;
            if t0 + n <= seg_end {
                let src = &whole[si].k[(t0 - starts[si]) * wkv + g * hd..];
                transpose(src, wkv, n, hd, dst);
            } else {
                for (c, (k, _)) in keys[t0..t0 + n].iter().enumerate() {
                    for (d, &x) in k[g * hd..(g + 1) * hd].iter().enumerate() {
                        dst[d * n + c] = x;
                    }
                }
            }
        }
        if !in_place {
            for (j, (_, v)) in keys.iter().enumerate() {
                vg[j * hd..(j + 1) * hd].copy_from_slice(&v[g * hd..(g + 1) * hd]);
            }
        }
        let (v, vs) = if in_place {
            (&whole[0].v[g * hd..], wkv)
        } else {
            (&vg[..], hd)
        };
        for h in g * group..(g + 1) * group {
            for i0 in (0..n_q).step_by(ROW_CHUNK) {
                let m = ROW_CHUNK.min(n_q - i0);
                for r in 0..m {
                    let src = (i0 + r) * wq + h * hd;
                    qb[r * hd..(r + 1) * hd].copy_from_slice(&q[src..src + hd]);
                }
                attend(
                    &qb[..m * hd],
                    hd,
                    &kt,
                    v,
                    vs,
                    n_keys,
                    shape.scale,
                    &mut ob[..m * hd],
                );
                for r in 0..m {
                    let dst = (i0 + r) * wq + h * hd;
                    out[dst..dst + hd].copy_from_slice(&ob[r * hd..(r + 1) * hd]);
                }
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
            };
            let (n_q, n_k) = (5, 23);
            check_against_reference(shape, n_q, n_k, &mut seed);
            // Enough rows and keys for the tiled path, with ragged tiles
            // and blocks (600 keys: two full tiles and a part).
            check_against_reference(shape, 37, 600, &mut seed);
        }
    }

    fn check_against_reference(shape: DenseShape, n_q: usize, n_k: usize, seed: &mut u64) {
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
                    assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
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
        };
        let q = vec![1.0; 8];
        let mut out = vec![9.0; 8];
        attention_segments(&q, &[], shape, &mut Vec::new(), &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
