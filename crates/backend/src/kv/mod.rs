//! The KV pool: keys and values of every sequence, in fixed-size blocks of
//! positions that sequences take as they grow and give back when they
//! shrink or end.
//!
//! A [`KvPool`] fixes the cache types (`-ctk`/`-ctv`), the block size and
//! how many blocks exist in all; memory is taken block by block, so a pool
//! sized for long contexts costs only what its sequences hold. A [`KvSeq`]
//! is a table of shared blocks plus nothing else: forking or sharing a
//! prefix copies the table, and a block shared by two sequences is copied
//! the first time one of them writes into it (copy on write).

mod types;

pub use types::KvType;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Positions per block unless a pool is told otherwise. llama.cpp's f32
/// attention route works through keys in tiles of 64, so with blocks of 64
/// a tile never straddles two blocks; smaller blocks would also share
/// prefixes more finely but cost a table entry per 64 positions anyway.
pub const DEFAULT_BLOCK_SIZE: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvError {
    #[error("unknown KV cache type '{0}' (known: {known})", known = types::known_names())]
    UnknownType(String),
    #[error(
        "KV cache type {ty} stores blocks of {block} values, but this model's heads are {head_dim} wide"
    )]
    HeadDim {
        ty: KvType,
        block: usize,
        head_dim: usize,
    },
    #[error("KV cache type {0} has no kernels in this build")]
    NoKernels(KvType),
    #[error("the KV block size must be a power of two from 16 to 4096, not {0}")]
    BlockSize(usize),
    #[error(
        "the KV cache is full: {need} more blocks of {block_size} positions needed, {free} of {total} free"
    )]
    PoolFull {
        need: usize,
        free: usize,
        total: usize,
        block_size: usize,
    },
    #[error("context is full: {want} positions asked, a sequence holds at most {max}")]
    SequenceFull { want: usize, max: usize },
    #[error("the sequences belong to different KV pools")]
    OtherPool,
    #[error("{got} values given for rows of {width}")]
    RowWidth { got: usize, width: usize },
}

/// The shape of what a model caches per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub n_layer: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl KvLayout {
    /// Keys (or values) per position and layer.
    pub fn width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// How a pool is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvConfig {
    pub type_k: KvType,
    pub type_v: KvType,
    /// Positions the pool holds in all (`-c`), rounded up to whole blocks.
    pub n_positions: usize,
    pub block_size: usize,
}

impl KvConfig {
    /// F16 keys and values (llama.cpp's default) for `n_positions`.
    pub fn f16(n_positions: usize) -> KvConfig {
        KvConfig {
            type_k: KvType::F16,
            type_v: KvType::F16,
            n_positions,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Where one kind of row (keys or values) lies in a block.
#[derive(Debug, Clone, Copy)]
struct Region {
    ty: KvType,
    /// Bytes of one position's row (all heads).
    row: usize,
    /// Bytes of one head's part of a row.
    head: usize,
    /// Offset of layer 0's rows in the block; layer `l` adds `l * layer_stride`.
    offset: usize,
}

/// Counts live blocks; shared with every block so that dropping one gives
/// its place back without a reference to the pool.
#[derive(Debug, Default)]
struct Counter {
    used: AtomicUsize,
    peak: AtomicUsize,
}

/// The blocks every sequence of one model draws from.
#[derive(Debug)]
pub struct KvPool {
    layout: KvLayout,
    block_size: usize,
    shift: u32,
    n_blocks: usize,
    k: Region,
    v: Region,
    layer_stride: usize,
    block_words: usize,
    counter: Arc<Counter>,
}

fn align8(n: usize) -> usize {
    n.next_multiple_of(8)
}

impl KvPool {
    pub fn new(layout: KvLayout, config: KvConfig) -> Result<Arc<KvPool>, KvError> {
        let bs = config.block_size;
        if !bs.is_power_of_two() || !(16..=4096).contains(&bs) {
            return Err(KvError::BlockSize(bs));
        }
        let region = |ty: KvType| -> Result<(usize, usize), KvError> {
            let g = ty.ggml();
            let block = g.block_size();
            if !layout.head_dim.is_multiple_of(block) {
                return Err(KvError::HeadDim {
                    ty,
                    block,
                    head_dim: layout.head_dim,
                });
            }
            if ty.kernels().is_none() {
                return Err(KvError::NoKernels(ty));
            }
            let head = layout.head_dim / block * g.type_size();
            Ok((head * layout.n_head_kv, head))
        };
        let (row_k, head_k) = region(config.type_k)?;
        let (row_v, head_v) = region(config.type_v)?;
        let k_bytes = align8(bs * row_k);
        let layer_stride = k_bytes + align8(bs * row_v);
        let block_bytes = (layer_stride * layout.n_layer).max(8);
        Ok(Arc::new(KvPool {
            layout,
            block_size: bs,
            shift: bs.trailing_zeros(),
            n_blocks: config.n_positions.div_ceil(bs),
            k: Region {
                ty: config.type_k,
                row: row_k,
                head: head_k,
                offset: 0,
            },
            v: Region {
                ty: config.type_v,
                row: row_v,
                head: head_v,
                offset: k_bytes,
            },
            layer_stride,
            block_words: block_bytes / 8,
            counter: Arc::default(),
        }))
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    pub fn type_k(&self) -> KvType {
        self.k.ty
    }

    pub fn type_v(&self) -> KvType {
        self.v.ty
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in all.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Positions in all (whole blocks).
    pub fn n_positions(&self) -> usize {
        self.n_blocks * self.block_size
    }

    /// Blocks held by sequences.
    pub fn blocks_in_use(&self) -> usize {
        self.counter.used.load(Ordering::Relaxed)
    }

    /// The most blocks ever in use at once.
    pub fn peak_blocks(&self) -> usize {
        self.counter.peak.load(Ordering::Relaxed)
    }

    /// The size of the Walsh-Hadamard rotation applied to queries and keys
    /// (in chunks of a row) before keys are stored, for a block-format key
    /// type and heads a multiple of 64 wide: the largest power of two that
    /// divides the head width. llama.cpp rotates the same way (its
    /// `attn_rot_k`): the rotation spreads outlier dimensions over the
    /// block, so quantizing loses less, and leaves every score as it was.
    pub fn rotation_k(&self) -> Option<usize> {
        let hd = self.layout.head_dim;
        (self.k.ty.is_quantized() && hd.is_multiple_of(64)).then(|| 1 << hd.trailing_zeros())
    }

    /// The size of the rotation applied to values before they are stored
    /// and to the attention output after (llama.cpp's `attn_rot_v`): 64,
    /// for a block-format value type and heads a multiple of 64 wide.
    pub fn rotation_v(&self) -> Option<usize> {
        (self.v.ty.is_quantized() && self.layout.head_dim.is_multiple_of(64)).then_some(64)
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.block_words * 8
    }

    /// Bytes the cache would take with every block in use.
    pub fn capacity_bytes(&self) -> usize {
        self.n_blocks * self.block_bytes()
    }

    /// Bytes of keys and values per position (all layers).
    pub fn bytes_per_position(&self) -> usize {
        (self.k.row + self.v.row) * self.layout.n_layer
    }

    /// A new block (zeroed: memory is only touched when written).
    fn take(&self) -> Result<Arc<Block>, KvError> {
        loop {
            let used = self.counter.used.load(Ordering::Relaxed);
            if used >= self.n_blocks {
                return Err(KvError::PoolFull {
                    need: 1,
                    free: 0,
                    total: self.n_blocks,
                    block_size: self.block_size,
                });
            }
            if self
                .counter
                .used
                .compare_exchange(used, used + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.counter.peak.fetch_max(used + 1, Ordering::Relaxed);
                return Ok(Arc::new(Block {
                    data: vec![0u64; self.block_words].into_boxed_slice(),
                    counter: self.counter.clone(),
                }));
            }
        }
    }

    /// Blocks free now.
    pub fn available(&self) -> usize {
        self.n_blocks.saturating_sub(self.blocks_in_use())
    }

    fn region(&self, kind: Kind) -> &Region {
        match kind {
            Kind::K => &self.k,
            Kind::V => &self.v,
        }
    }
}

/// Keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    K,
    V,
}

/// `block_size` positions of keys and values of every layer.
pub struct Block {
    data: Box<[u64]>,
    counter: Arc<Counter>,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.counter.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Block {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.data)
    }
}

/// One sequence's keys and values: the blocks it holds, in position order.
/// How many positions are filled is the model's business; a sequence only
/// guarantees room for [`KvSeq::capacity`] positions.
pub struct KvSeq {
    pool: Arc<KvPool>,
    blocks: Vec<Arc<Block>>,
    max_len: usize,
}

impl KvSeq {
    /// An empty sequence of `pool` that may grow to `max_len` positions.
    pub fn new(pool: Arc<KvPool>, max_len: usize) -> KvSeq {
        KvSeq {
            pool,
            blocks: Vec::new(),
            max_len,
        }
    }

    pub fn pool(&self) -> &Arc<KvPool> {
        &self.pool
    }

    /// The most positions this sequence may hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions the blocks held have room for.
    pub fn capacity(&self) -> usize {
        self.blocks.len() << self.pool.shift
    }

    /// Blocks held.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// An identity of each block held, equal for sequences sharing it (to
    /// count distinct blocks over several sequences).
    pub fn block_ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks.iter().map(|b| Arc::as_ptr(b) as usize)
    }

    /// Makes room for positions `0..n`, taking blocks from the pool. On
    /// failure the sequence keeps what it held.
    pub fn reserve(&mut self, n: usize) -> Result<(), KvError> {
        if n > self.max_len {
            return Err(KvError::SequenceFull {
                want: n,
                max: self.max_len,
            });
        }
        let want = n.div_ceil(self.pool.block_size);
        let have = self.blocks.len();
        if want <= have {
            return Ok(());
        }
        if want - have > self.pool.available() {
            return Err(KvError::PoolFull {
                need: want - have,
                free: self.pool.available(),
                total: self.pool.n_blocks,
                block_size: self.pool.block_size,
            });
        }
        let mut taken = Vec::with_capacity(want - have);
        for _ in have..want {
            taken.push(self.pool.take()?);
        }
        self.blocks.extend(taken);
        Ok(())
    }

    /// Keeps the blocks that hold positions `0..n` and gives the rest back.
    pub fn truncate(&mut self, n: usize) {
        self.blocks.truncate(n.div_ceil(self.pool.block_size));
    }

    /// Holds the blocks of `src`'s first `n` positions instead of its own:
    /// whole blocks are shared, and the block holding position `n` is copied
    /// when either sequence next writes into it.
    pub fn share_prefix(&mut self, src: &KvSeq, n: usize) -> Result<(), KvError> {
        if !Arc::ptr_eq(&self.pool, &src.pool) {
            return Err(KvError::OtherPool);
        }
        let nb = n.div_ceil(self.pool.block_size).min(src.blocks.len());
        self.blocks.clear();
        self.blocks.extend(src.blocks[..nb].iter().cloned());
        Ok(())
    }

    /// A sequence holding the same blocks (copy on write).
    pub fn fork(&self) -> KvSeq {
        KvSeq {
            pool: self.pool.clone(),
            blocks: self.blocks.clone(),
            max_len: self.max_len,
        }
    }

    /// Stores keys and values of consecutive positions from `pos` at layer
    /// `layer`, converted to the pool's cache types. `k` and `v` hold whole
    /// rows of [`KvLayout::width`] floats; the positions must be reserved.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<(), KvError> {
        let width = self.pool.layout.width();
        if !k.len().is_multiple_of(width) || k.len() != v.len() || layer >= self.pool.layout.n_layer
        {
            return Err(KvError::RowWidth {
                got: k.len(),
                width,
            });
        }
        let n = k.len() / width;
        if pos + n > self.capacity() {
            return Err(KvError::SequenceFull {
                want: pos + n,
                max: self.capacity(),
            });
        }
        let pool = self.pool.clone();
        let bs = pool.block_size;
        let mut i = 0;
        while i < n {
            let p = pos + i;
            let (bi, row) = (p >> pool.shift, p & (bs - 1));
            let run = (bs - row).min(n - i);
            let block = self.unique_block(bi)?;
            let base = layer * pool.layer_stride;
            for (region, src) in [(&pool.k, k), (&pool.v, v)] {
                let bytes = block.bytes_mut();
                for r in 0..run {
                    let at = base + region.offset + (row + r) * region.row;
                    let s = &src[(i + r) * width..(i + r + 1) * width];
                    region.ty.store(s, &mut bytes[at..at + region.row]);
                }
            }
            i += run;
        }
        Ok(())
    }

    /// Block `bi`, copied first if another sequence (or the prefix cache)
    /// shares it.
    fn unique_block(&mut self, bi: usize) -> Result<&mut Block, KvError> {
        if Arc::get_mut(&mut self.blocks[bi]).is_none() {
            let mut fresh = self.pool.take()?;
            let dst = Arc::get_mut(&mut fresh).expect("a new block has one owner");
            dst.data.copy_from_slice(&self.blocks[bi].data);
            self.blocks[bi] = fresh;
        }
        Ok(Arc::get_mut(&mut self.blocks[bi]).expect("made unique above"))
    }

    /// The rows of keys or values of layer `layer`, block by block.
    pub fn rows(&self, layer: usize, kind: Kind) -> Rows<'_> {
        let region = self.pool.region(kind);
        let (start, len) = (
            layer * self.pool.layer_stride + region.offset,
            self.pool.block_size * region.row,
        );
        Rows {
            blocks: self
                .blocks
                .iter()
                .map(|b| &b.bytes()[start..start + len])
                .collect(),
            ty: region.ty,
            row: region.row,
            head: region.head,
            shift: self.pool.shift,
            mask: self.pool.block_size - 1,
        }
    }
}

/// One layer's keys or values of a sequence, for reading.
pub struct Rows<'a> {
    blocks: Vec<&'a [u8]>,
    pub ty: KvType,
    row: usize,
    head: usize,
    shift: u32,
    mask: usize,
}

impl<'a> Rows<'a> {
    /// The bytes of head `h` at position `p`.
    #[inline]
    pub fn head(&self, p: usize, h: usize) -> &'a [u8] {
        let at = (p & self.mask) * self.row + h * self.head;
        &self.blocks[p >> self.shift][at..at + self.head]
    }

    /// Head `h` at position `p` as F16 bits (for F16 and BF16 caches).
    #[inline]
    pub fn head_u16(&self, p: usize, h: usize) -> &'a [u16] {
        bytemuck::cast_slice(self.head(p, h))
    }

    /// Head `h` of positions `0..n` in order, walking block by block (the
    /// fast way to read a run of positions).
    pub fn heads(&self, h: usize, n: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.heads_in(h, 0..n)
    }

    /// Head `h` of the positions of `range` in order, block by block.
    pub fn heads_in(
        &self,
        h: usize,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = &'a [u8]> + '_ {
        let (row, head) = (self.row, self.head);
        let first = (range.start >> self.shift).min(self.blocks.len());
        self.blocks[first..]
            .iter()
            .flat_map(move |b| {
                b.chunks_exact(row)
                    .map(move |r| &r[h * head..(h + 1) * head])
            })
            .skip(range.start & self.mask)
            .take(range.len())
    }

    /// [`Rows::heads`] as F16 bits (for F16 and BF16 caches).
    pub fn heads_u16(&self, h: usize, n: usize) -> impl Iterator<Item = &'a [u16]> + '_ {
        self.heads_u16_in(h, 0..n)
    }

    /// [`Rows::heads_in`] as F16 bits (for F16 and BF16 caches).
    pub fn heads_u16_in(
        &self,
        h: usize,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = &'a [u16]> + '_ {
        let (row, head) = (self.row / 2, self.head / 2);
        let first = (range.start >> self.shift).min(self.blocks.len());
        self.blocks[first..]
            .iter()
            .flat_map(move |b| {
                let b: &'a [u16] = bytemuck::cast_slice(b);
                b.chunks_exact(row)
                    .map(move |r| &r[h * head..(h + 1) * head])
            })
            .skip(range.start & self.mask)
            .take(range.len())
    }

    /// The positions a block holds.
    pub fn block_size(&self) -> usize {
        self.mask + 1
    }
}

#[cfg(test)]
mod tests;
