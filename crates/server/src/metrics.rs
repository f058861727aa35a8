//! `/metrics` in Prometheus' text exposition format.

use edgellama_engine::batch::{EngineMetrics, Histogram};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// HTTP responses by status class.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub ok: AtomicU64,
    pub client_error: AtomicU64,
    pub server_error: AtomicU64,
}

impl HttpCounters {
    pub fn count(&self, status: u16) {
        let c = match status {
            400..=499 => &self.client_error,
            500..=599 => &self.server_error,
            _ => &self.ok,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

pub(crate) fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (b, c) in h.bounds().iter().zip(h.cumulative()) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds());
    let _ = writeln!(out, "{name}_count {}", h.count());
}

pub fn render(m: &EngineMetrics, http: &HttpCounters) -> String {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut o = String::new();
    counter(
        &mut o,
        "edgellama_requests_total",
        "Generation requests accepted into the queue.",
        l(&m.requests_total),
    );
    counter(
        &mut o,
        "edgellama_requests_rejected_total",
        "Generation requests refused because the queue was full.",
        l(&m.requests_rejected),
    );
    counter(
        &mut o,
        "edgellama_requests_cancelled_total",
        "Requests whose client went away before they finished.",
        l(&m.requests_cancelled),
    );
    counter(
        &mut o,
        "edgellama_requests_failed_total",
        "Requests that ended in an engine error.",
        l(&m.requests_failed),
    );
    counter(
        &mut o,
        "edgellama_prompt_tokens_total",
        "Prompt tokens of admitted requests.",
        l(&m.prompt_tokens_total),
    );
    counter(
        &mut o,
        "edgellama_prompt_tokens_cached_total",
        "Prompt tokens reused from the prefix cache instead of computed.",
        l(&m.prompt_tokens_cached),
    );
    counter(
        &mut o,
        "edgellama_prefix_copies_total",
        "Requests that copied a cached prompt prefix from another sequence.",
        l(&m.prefix_copies_total),
    );
    counter(
        &mut o,
        "edgellama_generated_tokens_total",
        "Tokens generated.",
        l(&m.generated_tokens_total),
    );
    counter(
        &mut o,
        "edgellama_batch_steps_total",
        "Batched forward steps run.",
        l(&m.steps_total),
    );
    counter(
        &mut o,
        "edgellama_batch_tokens_total",
        "Tokens fed through the model in batched steps (prompt and generated).",
        l(&m.step_tokens_total),
    );
    gauge(
        &mut o,
        "edgellama_queue_depth",
        "Requests waiting for a slot.",
        m.queue_depth.load(Ordering::Relaxed) as f64,
    );
    gauge(
        &mut o,
        "edgellama_active_requests",
        "Requests holding a slot.",
        m.active.load(Ordering::Relaxed) as f64,
    );
    let used = m.kv_used.load(Ordering::Relaxed);
    gauge(
        &mut o,
        "edgellama_kv_cache_used_cells",
        "KV cache positions filled, prefix cache included.",
        used as f64,
    );
    gauge(
        &mut o,
        "edgellama_kv_cache_capacity_cells",
        "KV cache positions over all slots.",
        m.kv_capacity as f64,
    );
    gauge(
        &mut o,
        "edgellama_kv_cache_usage_ratio",
        "Share of the KV cache filled.",
        used as f64 / (m.kv_capacity.max(1)) as f64,
    );
    let blocks = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
    gauge(
        &mut o,
        "edgellama_kv_blocks_used",
        "KV pool blocks in use, idle slots' cached prefixes included.",
        blocks(&m.kv_blocks_used),
    );
    gauge(
        &mut o,
        "edgellama_kv_blocks_active",
        "KV pool blocks held by requests being served.",
        blocks(&m.kv_blocks_active),
    );
    gauge(
        &mut o,
        "edgellama_kv_blocks_total",
        "KV pool blocks in all.",
        m.kv_blocks_total as f64,
    );
    gauge(
        &mut o,
        "edgellama_kv_block_size",
        "Positions per KV pool block.",
        m.kv_block_size as f64,
    );
    counter(
        &mut o,
        "edgellama_kv_full_total",
        "Requests ended because the KV pool could not hold them.",
        l(&m.kv_full_total),
    );
    counter(
        &mut o,
        "edgellama_spec_checks_total",
        "Steps of a sequence that checked drafted tokens (speculative decoding).",
        l(&m.spec_checks_total),
    );
    counter(
        &mut o,
        "edgellama_spec_draft_tokens_total",
        "Tokens drafted and checked.",
        l(&m.spec_drafted_total),
    );
    counter(
        &mut o,
        "edgellama_spec_accepted_tokens_total",
        "Drafted tokens the model kept.",
        l(&m.spec_accepted_total),
    );
    let drafted = m.spec_drafted_total.load(Ordering::Relaxed);
    gauge(
        &mut o,
        "edgellama_spec_acceptance_rate",
        "Drafted tokens kept over drafted tokens, since the start (0 before any draft).",
        if drafted == 0 {
            0.0
        } else {
            m.spec_accepted_total.load(Ordering::Relaxed) as f64 / drafted as f64
        },
    );
    // vLLM's names for the same counts.
    counter(
        &mut o,
        "vllm:spec_decode_num_drafts",
        "Steps of a sequence that checked drafted tokens.",
        l(&m.spec_checks_total),
    );
    counter(
        &mut o,
        "vllm:spec_decode_num_draft_tokens",
        "Tokens drafted and checked.",
        l(&m.spec_drafted_total),
    );
    counter(
        &mut o,
        "vllm:spec_decode_num_accepted_tokens",
        "Drafted tokens the model kept.",
        l(&m.spec_accepted_total),
    );
    // The names the Kubernetes Gateway API inference extension's endpoint
    // picker reads by default (vLLM's), with their meaning: requests
    // waiting, requests running, and the share of the pool that running
    // requests hold (0..1; cached prefixes of idle slots are free to it, as
    // vLLM's evictable blocks are).
    gauge(
        &mut o,
        "vllm:num_requests_waiting",
        "Requests waiting for a slot.",
        m.queue_depth.load(Ordering::Relaxed) as f64,
    );
    gauge(
        &mut o,
        "vllm:num_requests_running",
        "Requests being served.",
        m.active.load(Ordering::Relaxed) as f64,
    );
    let usage = blocks(&m.kv_blocks_active) / m.kv_blocks_total.max(1) as f64;
    for name in ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"] {
        gauge(
            &mut o,
            name,
            "KV cache usage (0..1): blocks held by running requests over all blocks.",
            usage,
        );
    }
    let _ = writeln!(
        o,
        "# HELP vllm:cache_config_info KV cache settings.\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{}\",num_gpu_blocks=\"{}\",cache_dtype=\"{}\",cache_dtype_v=\"{}\"}} 1",
        m.kv_block_size, m.kv_blocks_total, m.kv_types.0, m.kv_types.1
    );
    histogram(
        &mut o,
        "edgellama_time_to_first_token_seconds",
        "From submission to the first generated token.",
        &m.time_to_first_token,
    );
    histogram(
        &mut o,
        "edgellama_inter_token_latency_seconds",
        "Between consecutive tokens of one reply.",
        &m.inter_token_latency,
    );
    histogram(
        &mut o,
        "edgellama_batch_step_seconds",
        "Time of one batched forward pass over every active sequence.",
        &m.step_time,
    );
    let _ = writeln!(
        o,
        "# HELP edgellama_http_responses_total HTTP responses by status class.\n# TYPE edgellama_http_responses_total counter"
    );
    for (class, c) in [
        ("2xx", &http.ok),
        ("4xx", &http.client_error),
        ("5xx", &http.server_error),
    ] {
        let _ = writeln!(
            o,
            "edgellama_http_responses_total{{class=\"{class}\"}} {}",
            l(c)
        );
    }
    o
}
