//! Counters the scheduler keeps for monitoring; read without locking.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A latency histogram with fixed bucket bounds (seconds), counted as
/// Prometheus does: bucket `i` counts observations `<= bounds[i]`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Bounds wide enough for time-to-first-token on a loaded CPU server.
const TTFT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bounds for one batched forward step.
const STEP_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28];
/// Bounds for the gap between consecutive tokens of one reply.
const ITL_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Cumulative counts per bound, as Prometheus' `le` buckets.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct EngineMetrics {
    pub requests_total: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub requests_failed: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub prompt_tokens_cached: AtomicU64,
    /// Admissions that copied a cached prefix from another slot.
    pub prefix_copies_total: AtomicU64,
    pub generated_tokens_total: AtomicU64,
    pub steps_total: AtomicU64,
    /// Tokens fed through the model (prompt chunks and decoded tokens).
    pub step_tokens_total: AtomicU64,
    pub queue_depth: AtomicUsize,
    pub active: AtomicUsize,
    /// Positions held across all slots' caches (finished ones included:
    /// they are the prefix cache).
    pub kv_used: AtomicUsize,
    /// Positions of the KV pool.
    pub kv_capacity: usize,
    /// Blocks of the KV pool in use (shared blocks count once), idle
    /// slots' cached prefixes included.
    pub kv_blocks_used: AtomicUsize,
    /// Blocks held by sequences being served: what the pool cannot give
    /// up (cached prefixes of idle slots are given up when it runs short).
    pub kv_blocks_active: AtomicUsize,
    pub kv_blocks_total: usize,
    pub kv_block_size: usize,
    /// `-ctk` and `-ctv` as llama.cpp names them.
    pub kv_types: (&'static str, &'static str),
    /// Requests ended because the KV pool could not hold them.
    pub kv_full_total: AtomicU64,
    /// Speculative decoding: sequences' steps that checked drafts, drafted
    /// tokens and the ones kept.
    pub spec_checks_total: AtomicU64,
    pub spec_drafted_total: AtomicU64,
    pub spec_accepted_total: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    /// Time of each batched forward pass.
    pub step_time: Histogram,
}

/// Plain numbers read from [`EngineMetrics`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub requests_total: u64,
    pub generated_tokens_total: u64,
    pub queue_depth: usize,
    pub active: usize,
    pub kv_used: usize,
    pub kv_capacity: usize,
}

impl EngineMetrics {
    /// Metrics of an engine configured as `config`.
    pub fn new(config: &super::EngineConfig) -> EngineMetrics {
        let (kv_capacity, kv_block_size) = (config.n_ctx, config.block_size);
        EngineMetrics {
            requests_total: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            requests_cancelled: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            prompt_tokens_total: AtomicU64::new(0),
            prompt_tokens_cached: AtomicU64::new(0),
            prefix_copies_total: AtomicU64::new(0),
            generated_tokens_total: AtomicU64::new(0),
            steps_total: AtomicU64::new(0),
            step_tokens_total: AtomicU64::new(0),
            queue_depth: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            kv_used: AtomicUsize::new(0),
            kv_capacity,
            kv_blocks_used: AtomicUsize::new(0),
            kv_blocks_active: AtomicUsize::new(0),
            kv_blocks_total: kv_capacity.div_ceil(kv_block_size.max(1)),
            kv_block_size,
            kv_types: (config.type_k.name(), config.type_v.name()),
            kv_full_total: AtomicU64::new(0),
            spec_checks_total: AtomicU64::new(0),
            spec_drafted_total: AtomicU64::new(0),
            spec_accepted_total: AtomicU64::new(0),
            time_to_first_token: Histogram::new(TTFT_BOUNDS),
            inter_token_latency: Histogram::new(ITL_BOUNDS),
            step_time: Histogram::new(STEP_BOUNDS),
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            generated_tokens_total: self.generated_tokens_total.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            kv_used: self.kv_used.load(Ordering::Relaxed),
            kv_capacity: self.kv_capacity,
        }
    }
}
