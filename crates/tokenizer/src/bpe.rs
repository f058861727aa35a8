//! Byte-level BPE merging of one pre-tokenized word.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// Multiplicative hash for the integer and short byte keys used here; the
/// default SipHash costs more than the merge lookups themselves.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Words longer than this are merged every time rather than cached.
const CACHE_MAX_WORD: usize = 256;
/// The cache is emptied when it reaches this many words.
const CACHE_CAPACITY: usize = 1 << 16;

/// Word bytes -> their tokens.
type WordCache = Mutex<FastMap<Box<[u8]>, Box<[u32]>>>;

pub(crate) struct Bpe {
    /// (left id, right id) -> (rank, merged id).
    merges: FastMap<u64, (u32, u32)>,
    /// Token of each single byte, if the vocabulary has one.
    byte_ids: [Option<u32>; 256],
    /// Raw bytes of each normal token, for `ignore_merges`.
    whole_words: Option<FastMap<Box<[u8]>, u32>>,
    cache: WordCache,
}

fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: usize,
    next: usize,
    alive: bool,
}

const NONE: usize = usize::MAX;

impl Bpe {
    pub(crate) fn new(
        merges: FastMap<u64, (u32, u32)>,
        byte_ids: [Option<u32>; 256],
        whole_words: Option<FastMap<Box<[u8]>, u32>>,
    ) -> Self {
        Bpe {
            merges,
            byte_ids,
            whole_words,
            cache: Mutex::new(FastMap::default()),
        }
    }

    pub(crate) fn pair_key(a: u32, b: u32) -> u64 {
        pair_key(a, b)
    }

    /// Appends the tokens of one word (raw bytes) to `out`.
    pub(crate) fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if let Some(id) = self.whole_words.as_ref().and_then(|m| m.get(word)) {
            out.push(*id);
            return;
        }
        let cacheable = word.len() <= CACHE_MAX_WORD;
        if cacheable {
            if let Ok(cache) = self.cache.lock() {
                if let Some(ids) = cache.get(word) {
                    out.extend_from_slice(ids);
                    return;
                }
            }
        }
        let start = out.len();
        self.merge(word, out);
        if cacheable {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(word.into(), out[start..].into());
            }
        }
    }

    /// Merges the lowest-ranked adjacent pair, leftmost first, until no pair
    /// has a merge rule: the order both Hugging Face and llama.cpp use.
    fn merge(&self, word: &[u8], out: &mut Vec<u32>) {
        // Bytes without a token are dropped, as Hugging Face does without an
        // unknown token.
        let mut syms: Vec<Symbol> = word
            .iter()
            .filter_map(|&b| self.byte_ids[b as usize])
            .map(|id| Symbol {
                id,
                prev: NONE,
                next: NONE,
                alive: true,
            })
            .collect();
        let n = syms.len();
        for (i, s) in syms.iter_mut().enumerate() {
            s.prev = if i == 0 { NONE } else { i - 1 };
            s.next = if i + 1 == n { NONE } else { i + 1 };
        }
        // (rank, left position, merged id)
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Symbol], left: usize| {
            if left == NONE || syms[left].next == NONE {
                return;
            }
            let right = syms[left].next;
            if let Some(&(rank, merged)) = self.merges.get(&pair_key(syms[left].id, syms[right].id))
            {
                heap.push(Reverse((rank, left, merged)));
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, &syms, i);
        }
        while let Some(Reverse((rank, left, merged))) = heap.pop() {
            let right = syms[left].next;
            if !syms[left].alive || right == NONE {
                continue;
            }
            // A stale entry: one side has merged since it was pushed.
            match self.merges.get(&pair_key(syms[left].id, syms[right].id)) {
                Some(&(r, m)) if r == rank && m == merged => {}
                _ => continue,
            }
            syms[left].id = merged;
            syms[right].alive = false;
            let after = syms[right].next;
            syms[left].next = after;
            if after != NONE {
                syms[after].prev = left;
            }
            push(&mut heap, &syms, syms[left].prev);
            push(&mut heap, &syms, left);
        }
        out.extend(syms.iter().filter(|s| s.alive).map(|s| s.id));
    }
}
