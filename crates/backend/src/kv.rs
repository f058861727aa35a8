use edgellama_kernels::convert::f32_to_f16;

/// Keys and values of every layer for up to `n_ctx` positions, stored as
/// F16 bits (as llama.cpp does by default), laid out `[layer][pos][n_embd_kv]`.
pub struct KvCache {
    n_layer: usize,
    n_ctx: usize,
    n_embd_kv: usize,
    k: Vec<u16>,
    v: Vec<u16>,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, n_embd_kv: usize) -> KvCache {
        let n = n_layer * n_ctx * n_embd_kv;
        KvCache {
            n_layer,
            n_ctx,
            n_embd_kv,
            k: vec![0; n],
            v: vec![0; n],
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    pub fn n_embd_kv(&self) -> usize {
        self.n_embd_kv
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 2
    }

    fn range(&self, layer: usize, pos: usize, n: usize) -> std::ops::Range<usize> {
        let start = (layer * self.n_ctx + pos) * self.n_embd_kv;
        start..start + n * self.n_embd_kv
    }

    /// Stores `n` positions of keys and values starting at `pos`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let n = k.len() / self.n_embd_kv;
        let r = self.range(layer, pos, n);
        for (d, s) in self.k[r.clone()].iter_mut().zip(k) {
            *d = f32_to_f16(*s);
        }
        for (d, s) in self.v[r].iter_mut().zip(v) {
            *d = f32_to_f16(*s);
        }
    }

    /// Copies positions `0..n` of every layer from `src`, a cache of the
    /// same model (same layers and widths).
    pub fn copy_prefix(&mut self, src: &KvCache, n: usize) {
        assert!(
            self.n_layer == src.n_layer && self.n_embd_kv == src.n_embd_kv,
            "caches of different shapes"
        );
        let n = n.min(self.n_ctx).min(src.n_ctx);
        for layer in 0..self.n_layer {
            let d = self.range(layer, 0, n);
            let s = src.range(layer, 0, n);
            self.k[d.clone()].copy_from_slice(&src.k[s.clone()]);
            self.v[d].copy_from_slice(&src.v[s]);
        }
    }

    /// Keys of positions `0..n` of a layer.
    pub fn keys(&self, layer: usize, n: usize) -> &[u16] {
        &self.k[self.range(layer, 0, n)]
    }

    /// Values of positions `0..n` of a layer.
    pub fn values(&self, layer: usize, n: usize) -> &[u16] {
        &self.v[self.range(layer, 0, n)]
    }
}
