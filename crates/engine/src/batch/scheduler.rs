//! The scheduler thread: admission, prefix reuse, chunked prefill and the
//! batched decode step.

use super::{
    Constraint, Done, EngineConfig, EngineMetrics, Event, FinishReason, Request, SubmitError,
    TokenEvent, TokenLogprob, Usage, ROUTE_SPLIT,
};
use crate::decode::{prime_penalties, ReplyText};
use crate::spec::Drafter;
use crate::stop::Released;
use edgellama_backend::{KvConfig, KvError, KvPool};
use edgellama_models::{BatchItem, CausalLm, Logits, ModelError, SeqState};
use edgellama_sampler::{Sampler, SamplerError};
use edgellama_tokenizer::Tokenizer;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

pub(super) struct Pending {
    pub req: Request,
    pub tx: UnboundedSender<Event>,
    pub submitted: Instant,
}

struct Queue {
    pending: VecDeque<Pending>,
    /// Requests taken from `pending` and not yet finished: they hold slots.
    busy: usize,
    shutdown: bool,
}

/// What the handles and the scheduler thread share.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    metrics: Arc<EngineMetrics>,
}

impl Shared {
    pub fn new(metrics: Arc<EngineMetrics>) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                busy: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half
        // changed (every change is one push or pop), so a poisoned lock is
        // still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `p` unless `max_queue` requests already wait with every
    /// one of the `n_slots` slots busy.
    pub fn push(&self, p: Pending, n_slots: usize, max_queue: usize) -> Result<(), SubmitError> {
        let mut q = self.lock();
        if q.shutdown {
            return Err(SubmitError::ShutDown);
        }
        let free = n_slots.saturating_sub(q.busy);
        if q.pending.len() >= max_queue + free {
            self.metrics
                .requests_rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::QueueFull(q.pending.len()));
        }
        q.pending.push_back(p);
        self.metrics
            .queue_depth
            .store(q.pending.len(), Ordering::Relaxed);
        self.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// A request taken from the queue has finished (or was dropped).
    /// Called before its last event is sent, so a client that sends its
    /// next request on seeing the end finds the slot free.
    fn release(&self) {
        let mut q = self.lock();
        q.busy = q.busy.saturating_sub(1);
    }

    pub fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wake.notify_all();
    }
}

/// A request being served.
struct Active {
    tx: UnboundedSender<Event>,
    prompt: Vec<u32>,
    /// Hashes of the prompt's images, in the order of its image tokens.
    image_hashes: Vec<[u8; 32]>,
    /// Prompt tokens in the cache so far (reused ones included).
    n_prompt_done: usize,
    n_reused: usize,
    /// Whether a fresh run computes this prompt with the f32 attention
    /// route (prompts of at least [`ROUTE_SPLIT`] tokens).
    route32: bool,
    sampler: Sampler,
    /// The request's logit biases, applied before the sampler's chain.
    bias: Vec<(u32, f32)>,
    reply: ReplyText<Arc<Tokenizer>>,
    constraint: Option<Box<dyn Constraint>>,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
    watch: Vec<u32>,
    /// The end-of-generation token's log-probability, sent with `Done`.
    end_logprob: Option<TokenLogprob>,
    n_generated: usize,
    /// The sampled token to feed at the next step.
    next: Option<u32>,
    /// What proposes this sequence's next tokens (speculative decoding),
    /// and the tokens it proposed for the current step.
    drafter: Option<Box<dyn Drafter>>,
    drafts: Vec<u32>,
    submitted: Instant,
    first_token: Option<Duration>,
    last_token: Option<Instant>,
}

/// One KV cache and what it holds.
struct Slot {
    state: SeqState,
    /// The tokens whose keys and values are in `state`, in order.
    cached: Vec<u32>,
    /// Hashes of the images bound to the image tokens of `cached`, in order:
    /// part of the prefix key, so a prompt reuses cached positions only
    /// where its images are the same too.
    cached_images: Vec<[u8; 32]>,
    /// Positions `[0, n_f32)` were computed with the f32 attention route,
    /// the rest with the F16 one.
    n_f32: usize,
    /// Step at which the slot was last given a request (for picking the
    /// least recently used among equals).
    last_used: u64,
    active: Option<Active>,
    /// Tokens fed in the current step.
    feed: Vec<u32>,
}

pub(super) struct Scheduler {
    model: Arc<dyn CausalLm>,
    /// The blocks every slot's sequence draws from.
    pool: Arc<KvPool>,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    step: u64,
}

/// Image tokens among `tokens`.
fn count_images(tokens: &[u32], image_token: Option<u32>) -> usize {
    image_token.map_or(0, |id| tokens.iter().filter(|&&t| t == id).count())
}

enum Outcome {
    Continue,
    Finished(FinishReason),
    Failed(String),
}

impl Scheduler {
    pub fn new(
        model: Arc<dyn CausalLm>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        shared: Arc<Shared>,
    ) -> Result<Scheduler, ModelError> {
        let pool = KvPool::new(
            model.kv_layout(),
            KvConfig {
                type_k: config.type_k,
                type_v: config.type_v,
                n_positions: config.n_ctx,
                block_size: config.block_size,
            },
        )?;
        let mut slots = Vec::with_capacity(config.n_parallel);
        for _ in 0..config.n_parallel {
            slots.push(Slot {
                state: model.new_state_in(&pool, config.n_ctx_seq())?,
                cached: Vec::new(),
                cached_images: Vec::new(),
                n_f32: 0,
                last_used: 0,
                active: None,
                feed: Vec::new(),
            });
        }
        Ok(Scheduler {
            model,
            pool,
            tokenizer,
            config,
            shared,
            slots,
            step: 0,
        })
    }

    fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    pub fn run(mut self) {
        loop {
            let incoming = {
                let mut q = self.shared.lock();
                loop {
                    if q.shutdown {
                        return;
                    }
                    let busy = self.slots.iter().any(|s| s.active.is_some());
                    if busy || !q.pending.is_empty() {
                        break;
                    }
                    q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                let free = self.slots.iter().filter(|s| s.active.is_none()).count();
                let n = free.min(q.pending.len());
                let taken: Vec<Pending> = q.pending.drain(..n).collect();
                q.busy += n;
                self.metrics()
                    .queue_depth
                    .store(q.pending.len(), Ordering::Relaxed);
                taken
            };
            for p in incoming {
                self.admit(p);
            }
            self.drop_cancelled();
            self.step_once();
            self.update_gauges();
        }
    }

    fn update_gauges(&self) {
        let m = self.metrics();
        m.active.store(
            self.slots.iter().filter(|s| s.active.is_some()).count(),
            Ordering::Relaxed,
        );
        m.kv_used.store(
            self.slots.iter().map(|s| s.state.n_past).sum(),
            Ordering::Relaxed,
        );
        m.kv_blocks_used
            .store(self.pool.blocks_in_use(), Ordering::Relaxed);
        let active: std::collections::HashSet<usize> = self
            .slots
            .iter()
            .filter(|s| s.active.is_some())
            .flat_map(|s| s.state.kv.block_ids())
            .collect();
        m.kv_blocks_active.store(active.len(), Ordering::Relaxed);
    }

    /// Gives up the cached prefix of the least recently used idle slot that
    /// holds blocks; false when none does.
    fn evict_idle(&mut self) -> bool {
        let victim = self
            .slots
            .iter_mut()
            .filter(|s| s.active.is_none() && s.state.kv.n_blocks() > 0)
            .min_by_key(|s| s.last_used);
        let Some(slot) = victim else {
            return false;
        };
        slot.state.truncate(0);
        slot.cached.clear();
        slot.cached_images.clear();
        slot.n_f32 = 0;
        true
    }

    /// Takes the pool's blocks for what each slot is fed this step:
    /// decoding tokens first, then prompt chunks in `order`, idle slots'
    /// cached prefixes given up when the pool runs short. A prompt chunk
    /// that does not fit waits for a later step (its feed is cleared); a
    /// decoding sequence that does not fit ends with the pool's error, as
    /// does the newest waiting prompt when nothing at all could run.
    fn reserve_feeds(&mut self, order: &[usize]) {
        let mut waiting = Vec::new();
        let mut ran = false;
        for decoding in [true, false] {
            for &i in order {
                let slot = &self.slots[i];
                let Some(a) = slot.active.as_ref() else {
                    continue;
                };
                if slot.feed.is_empty() || a.next.is_some() != decoding {
                    continue;
                }
                let result = loop {
                    let slot = &mut self.slots[i];
                    match slot.state.reserve(slot.feed.len()) {
                        Err(ModelError::Kv(KvError::PoolFull { .. })) if self.evict_idle() => {}
                        r => break r,
                    }
                };
                match result {
                    Ok(()) => ran = true,
                    Err(ModelError::Kv(e @ KvError::PoolFull { .. })) if !decoding => {
                        waiting.push((i, e));
                        self.slots[i].feed.clear();
                    }
                    Err(e) => self.fail_kv(i, e.to_string()),
                }
            }
        }
        if !ran {
            if let Some((i, e)) = waiting
                .into_iter()
                .max_by_key(|(i, _)| self.slots[*i].last_used)
            {
                self.fail_kv(i, format!("{e}; raise -c or lower --parallel"));
            }
        }
    }

    /// Ends slot `i`'s request with `msg` because the pool cannot hold it.
    fn fail_kv(&mut self, i: usize, msg: String) {
        let slot = &mut self.slots[i];
        slot.feed.clear();
        if let Some(a) = slot.active.take() {
            self.shared.release();
            let _ = a.tx.send(Event::Error(msg));
            let m = &self.shared.metrics;
            m.requests_failed.fetch_add(1, Ordering::Relaxed);
            m.kv_full_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many leading tokens of `prompt` may be taken from `slot`'s
    /// cache so that the result is bit-identical to computing all of it.
    fn reusable(
        slot: &Slot,
        prompt: &[u32],
        images: &[[u8; 32]],
        image_token: Option<u32>,
    ) -> usize {
        let mut seen = 0;
        let common = slot
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| {
                if a != b {
                    return false;
                }
                if Some(**a) != image_token {
                    return true;
                }
                // The same image token stands for the same image only if
                // both hold the same bytes.
                let same = slot.cached_images.get(seen).is_some()
                    && slot.cached_images.get(seen) == images.get(seen);
                seen += 1;
                same
            })
            .count()
            .min(slot.state.n_past);
        // The last prompt token is always computed: its logits are needed.
        let mut r = common.min(prompt.len() - 1);
        if prompt.len() >= ROUTE_SPLIT {
            // Fresh, every prompt position takes the f32 route: reuse
            // only such positions, and leave a remainder long enough to
            // take it too.
            r = r.min(slot.n_f32).min(prompt.len() - ROUTE_SPLIT);
        } else if slot.n_f32 > 0 {
            // Fresh, a short prompt takes the F16 route throughout.
            r = 0;
        }
        r
    }

    fn admit(&mut self, p: Pending) {
        if p.tx.is_closed() {
            self.metrics()
                .requests_cancelled
                .fetch_add(1, Ordering::Relaxed);
            self.shared.release();
            return;
        }
        let Pending {
            req, tx, submitted, ..
        } = p;
        let image_token = self.model.info().image_token;
        let hashes: Vec<[u8; 32]> = req.images.iter().map(|im| im.hash).collect();
        // The free slot sharing the longest usable prefix; among equals the
        // least recently used, so popular prefixes stay cached longer.
        let best = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| {
                (
                    Self::reusable(s, &req.prompt, &hashes, image_token),
                    std::cmp::Reverse(s.last_used),
                    i,
                )
            })
            .max();
        let Some((mut reuse, _, i)) = best else {
            // Admission only takes as many requests as there are free slots.
            self.shared.release();
            let _ = tx.send(Event::Error("no free slot".into()));
            return;
        };
        // Another slot, busy or not, may hold more of the prompt (a system
        // prompt or a guard's policy that every request starts with): its
        // positions are copied rather than computed again. The rule of
        // `reusable` holds for them as for the slot's own.
        let donor = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, s)| (Self::reusable(s, &req.prompt, &hashes, image_token), j))
            .max();
        if let Some((more, j)) = donor.filter(|&(more, _)| more > reuse) {
            let (dst, src) = if i < j {
                let (a, b) = self.slots.split_at_mut(j);
                (&mut a[i], &b[0])
            } else {
                let (a, b) = self.slots.split_at_mut(i);
                (&mut b[0], &a[j])
            };
            // Only a sequence of another pool is refused, and the slots
            // share one; a refusal would leave the slot's own prefix.
            if dst.state.copy_prefix_from(&src.state, more).is_ok() {
                dst.cached = src.cached[..more].to_vec();
                let n_bound = count_images(&dst.cached, image_token);
                dst.cached_images =
                    src.cached_images[..n_bound.min(src.cached_images.len())].to_vec();
                dst.n_f32 = src.n_f32.min(more);
                reuse = more;
                self.metrics()
                    .prefix_copies_total
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut sampling = req.sampling;
        let bias = std::mem::take(&mut sampling.logit_bias);
        let sampler = match Sampler::new(&sampling) {
            Ok(s) => s,
            Err(e) => {
                self.shared.release();
                let _ = tx.send(Event::Error(e.to_string()));
                return;
            }
        };
        let drafter = match self.config.spec.as_ref().filter(|_| req.speculative) {
            Some(spec) => match spec.drafter(self.config.n_ctx_seq()) {
                Ok(d) => d,
                Err(e) => {
                    self.shared.release();
                    let _ = tx.send(Event::Error(e.to_string()));
                    return;
                }
            },
            None => None,
        };
        self.step += 1;
        let slot = &mut self.slots[i];
        slot.state.truncate(reuse);
        slot.cached.truncate(reuse);
        let n_bound = count_images(&slot.cached, image_token);
        slot.cached_images.truncate(n_bound);
        slot.n_f32 = slot.n_f32.min(reuse);
        slot.last_used = self.step;
        // The images past the reused prefix wait for their tokens (an image
        // seen before keeps its encoding in the model's cache).
        for img in req.images.iter().skip(n_bound) {
            if let Err(e) = self.model.attach_image(&mut slot.state, img) {
                slot.state.truncate(reuse);
                self.shared.release();
                let _ = tx.send(Event::Error(e.to_string()));
                return;
            }
        }
        let mut active = Active {
            tx,
            route32: req.prompt.len() >= ROUTE_SPLIT,
            n_prompt_done: reuse,
            n_reused: reuse,
            sampler,
            bias,
            reply: ReplyText::new(self.tokenizer.clone(), req.special, req.stop),
            constraint: req.constraint,
            max_tokens: req.max_tokens,
            logprobs: req.logprobs,
            watch: req.watch,
            end_logprob: None,
            n_generated: 0,
            next: None,
            drafter,
            drafts: Vec::new(),
            submitted,
            first_token: None,
            last_token: None,
            prompt: req.prompt,
            image_hashes: hashes,
        };
        prime_penalties(
            &mut active.sampler,
            sampling.penalty_last_n,
            &[],
            &active.prompt,
        );
        let m = self.metrics();
        m.prompt_tokens_total
            .fetch_add(active.prompt.len() as u64, Ordering::Relaxed);
        m.prompt_tokens_cached
            .fetch_add(reuse as u64, Ordering::Relaxed);
        self.slots[i].active = Some(active);
    }

    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                slot.active = None;
                self.shared
                    .metrics
                    .requests_cancelled
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.release();
            }
        }
    }

    /// Tokens of a prompt chunk for a sequence with `remaining` prompt
    /// tokens when `avail` fit in this step. Sequences on the f32 route
    /// keep every chunk, and what remains after it, at [`ROUTE_SPLIT`]
    /// tokens or more.
    fn chunk_len(remaining: usize, avail: usize, route32: bool) -> usize {
        if remaining <= avail {
            return remaining;
        }
        if !route32 {
            return avail;
        }
        let n = avail.min(remaining.saturating_sub(ROUTE_SPLIT));
        if n < ROUTE_SPLIT {
            0
        } else {
            n
        }
    }

    /// Adds drafted tokens to the feeds of decoding sequences whose
    /// requests allow it, while the step's decoding rows stay within
    /// [`super::SpecConfig::max_rows`] and the pool has room for them.
    fn add_drafts(&mut self, order: &[usize]) {
        let Some(max_rows) = self.config.spec.as_ref().map(|s| s.max_rows) else {
            return;
        };
        let max_rows = max_rows.min(self.config.batch_tokens);
        let n_min = self.config.spec.as_ref().map_or(0, |s| s.n_min);
        let mut rows: usize = self.slots.iter().map(|s| s.feed.len()).sum();
        for &i in order {
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            a.drafts.clear();
            let (Some(next), Some(drafter)) = (a.next, a.drafter.as_mut()) else {
                continue;
            };
            if slot.feed.len() != 1 {
                continue;
            }
            // Drafts stay inside the context and the reply's token budget,
            // so only a verdict can end the reply among them.
            let room = max_rows
                .saturating_sub(rows)
                .min(slot.state.n_ctx().saturating_sub(slot.state.n_past + 1))
                .min(
                    a.max_tokens
                        .map_or(usize::MAX, |m| m.saturating_sub(a.n_generated)),
                );
            if room < n_min.max(1) {
                continue;
            }
            let mut history = Vec::with_capacity(slot.cached.len() + 1);
            history.extend_from_slice(&slot.cached);
            history.push(next);
            let draft = match drafter.draft(&history, room) {
                Ok(d) => d.fit(room, n_min, self.model.info().image_token),
                // A drafter that fails only costs its drafts.
                Err(_) => continue,
            };
            let k = draft.tokens.len();
            if k == 0 || slot.state.reserve(1 + k).is_err() {
                continue;
            }
            a.drafts = draft.tokens;
            slot.feed.extend_from_slice(&a.drafts);
            rows += k;
        }
    }

    fn step_once(&mut self) {
        // Plan: decode tokens first (one per generating sequence), then
        // prompt chunks in admission order within what is left.
        let mut budget = self.config.batch_tokens;
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_some())
            .collect();
        order.sort_by_key(|&i| self.slots[i].last_used);
        let mut wants_logits = vec![false; self.slots.len()];
        for &i in &order {
            let slot = &mut self.slots[i];
            slot.feed.clear();
            if let Some(next) = slot.active.as_ref().and_then(|a| a.next) {
                slot.feed.push(next);
                wants_logits[i] = true;
                budget -= 1;
            }
        }
        for &i in &order {
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_ref() else {
                continue;
            };
            if a.next.is_some() || a.n_prompt_done >= a.prompt.len() {
                continue;
            }
            let remaining = a.prompt.len() - a.n_prompt_done;
            let n = Self::chunk_len(remaining, budget, a.route32);
            if n == 0 {
                continue;
            }
            slot.feed
                .extend_from_slice(&a.prompt[a.n_prompt_done..a.n_prompt_done + n]);
            wants_logits[i] = n == remaining;
            budget -= n;
        }
        self.reserve_feeds(&order);
        let reads_prompt = order.iter().any(|&i| {
            let slot = &self.slots[i];
            slot.active.as_ref().is_some_and(|a| a.next.is_none()) && !slot.feed.is_empty()
        });
        if !reads_prompt {
            self.add_drafts(&order);
        }
        // In slot order, as the batch items are built.
        let fed: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].feed.is_empty() && self.slots[i].active.is_some())
            .collect();
        if fed.is_empty() {
            return;
        }

        let mut items: Vec<BatchItem<'_>> = Vec::with_capacity(fed.len());
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !fed.contains(&i) {
                continue;
            }
            let n = slot.feed.len();
            let drafted = slot.active.as_ref().is_some_and(|a| !a.drafts.is_empty());
            items.push(BatchItem {
                state: &mut slot.state,
                tokens: &slot.feed,
                logits: if drafted {
                    Logits::All
                } else if wants_logits[i] {
                    Logits::Last
                } else {
                    Logits::From(n)
                },
            });
        }
        let n_fed: usize = items.iter().map(|it| it.tokens.len()).sum();
        let t0 = Instant::now();
        let result = self.model.forward_batch(&mut items);
        drop(items);
        let m = self.metrics();
        m.step_time.observe(t0.elapsed());
        m.steps_total.fetch_add(1, Ordering::Relaxed);
        m.step_tokens_total
            .fetch_add(n_fed as u64, Ordering::Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // Fail the sequences of this step; their caches are
                // unreliable now.
                for &i in &fed {
                    let slot = &mut self.slots[i];
                    if let Some(a) = slot.active.take() {
                        self.shared.release();
                        let _ = a.tx.send(Event::Error(e.to_string()));
                    }
                    slot.state.truncate(0);
                    slot.cached.clear();
                    slot.cached_images.clear();
                    slot.n_f32 = 0;
                    self.shared
                        .metrics
                        .requests_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        for (&i, logits) in fed.iter().zip(logits) {
            let slot = &mut self.slots[i];
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            slot.cached.extend_from_slice(&slot.feed);
            // `cached_images` holds one hash per image token of `cached`.
            for _ in 0..count_images(&slot.feed, self.model.info().image_token) {
                if let Some(h) = a.image_hashes.get(slot.cached_images.len()) {
                    slot.cached_images.push(*h);
                }
            }
            if a.next.take().is_none() {
                a.n_prompt_done += slot.feed.len();
                if a.route32 {
                    slot.n_f32 = slot.cached.len();
                }
            }
            if !wants_logits[i] {
                continue;
            }
            let outcome = if a.drafts.is_empty() {
                sample_one(
                    a,
                    &self.tokenizer,
                    logits,
                    slot.state.n_past >= slot.state.n_ctx(),
                    &self.shared.metrics,
                )
            } else {
                check_drafts(
                    slot,
                    &self.tokenizer,
                    logits,
                    self.model.info().n_vocab,
                    &self.shared.metrics,
                )
            };
            let slot = &mut self.slots[i];
            match outcome {
                Outcome::Continue => {}
                Outcome::Finished(reason) => {
                    if let Some(a) = slot.active.take() {
                        self.shared.release();
                        finish(a, reason);
                    }
                }
                Outcome::Failed(msg) => {
                    if let Some(a) = slot.active.take() {
                        self.shared.release();
                        let _ = a.tx.send(Event::Error(msg));
                    }
                    self.shared
                        .metrics
                        .requests_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Samples the next token from `logits`, sends its text, and says whether
/// the request goes on.
fn sample_one(
    a: &mut Active,
    tokenizer: &Tokenizer,
    mut logits: Vec<f32>,
    context_full: bool,
    metrics: &EngineMetrics,
) -> Outcome {
    if a.max_tokens.is_some_and(|m| a.n_generated >= m) {
        return Outcome::Finished(FinishReason::MaxTokens);
    }
    // Log-probabilities are the model's, before biases and masks.
    let wants = a.logprobs.is_some() || !a.watch.is_empty();
    let stats = wants.then(|| {
        let (lse, top) = logprob_stats(&logits, a.logprobs.unwrap_or(0));
        let watched = a
            .watch
            .iter()
            .map(|&w| {
                logits
                    .get(w as usize)
                    .map_or(f32::NEG_INFINITY, |&l| (l as f64 - lse) as f32)
            })
            .collect::<Vec<f32>>();
        (lse, top, watched)
    });
    // Biases are the chain's first step: applied here, in place, they
    // leave greedy sampling a plain argmax.
    for &(id, b) in &a.bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
    if let Some(c) = &a.constraint {
        mask(&**c, tokenizer, &mut logits);
    }
    let id = match a.sampler.sample(&logits) {
        // Greedy picks an argmax even when everything is banned.
        Ok(id)
            if logits
                .get(id as usize)
                .is_some_and(|l| *l > f32::NEG_INFINITY) =>
        {
            id
        }
        Ok(_) => return Outcome::Failed(SamplerError::AllExcluded.to_string()),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let logprob = stats.map(|(lse, top, watched)| {
        // The chosen token was not masked, so its logit is the model's
        // plus its biases.
        let bias: f32 = a.bias.iter().filter(|b| b.0 == id).map(|b| b.1).sum();
        let raw = logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&l| l - bias);
        TokenLogprob {
            id,
            logprob: (raw as f64 - lse) as f32,
            top,
            watched,
        }
    });
    let now = Instant::now();
    match a.last_token {
        None => {
            let ttft = now - a.submitted;
            a.first_token = Some(ttft);
            metrics.time_to_first_token.observe(ttft);
        }
        Some(t) => metrics.inter_token_latency.observe(now - t),
    }
    a.last_token = Some(now);
    if tokenizer.is_eog(id) {
        a.end_logprob = logprob;
        return Outcome::Finished(FinishReason::EndOfGeneration);
    }
    a.n_generated += 1;
    metrics
        .generated_tokens_total
        .fetch_add(1, Ordering::Relaxed);
    if let Some(c) = a.constraint.as_mut() {
        c.accept(tokenizer.piece(id, false));
    }
    let Released { text, stop } = a.reply.push(id);
    if a.tx
        .send(Event::Token(TokenEvent { id, text, logprob }))
        .is_err()
    {
        // The receiver is gone: the slot is freed at the next step.
        return Outcome::Continue;
    }
    if let Some(i) = stop {
        return Outcome::Finished(FinishReason::StopString(i));
    }
    if context_full {
        return Outcome::Finished(FinishReason::ContextFull);
    }
    a.next = Some(id);
    Outcome::Continue
}

/// Checks the drafts a decoding sequence was fed with, one row of `logits`
/// (`n_vocab` each: the fed token's, then each draft's) at a time: each row
/// is sampled as a plain step would sample it, and while the token drawn is
/// the draft already in the cache the next row is read. The first token
/// that differs is fed at the next step; the cache keeps nothing of the
/// rejected drafts.
fn check_drafts(
    slot: &mut Slot,
    tokenizer: &Tokenizer,
    logits: Vec<f32>,
    n_vocab: usize,
    metrics: &EngineMetrics,
) -> Outcome {
    let Some(a) = slot.active.as_mut() else {
        return Outcome::Continue;
    };
    let drafts = std::mem::take(&mut a.drafts);
    let k = drafts.len();
    // Position of the row-0 token (the one sampled last step).
    let base = slot.state.n_past - (k + 1);
    let n_ctx = slot.state.n_ctx();
    let mut kept = 0;
    let mut outcome = Outcome::Continue;
    for (j, row) in logits.chunks_exact(n_vocab).take(k + 1).enumerate() {
        let pos = base + 1 + j;
        outcome = sample_one(a, tokenizer, row.to_vec(), pos >= n_ctx, metrics);
        let Outcome::Continue = outcome else {
            break;
        };
        match (a.next, drafts.get(j)) {
            (Some(t), Some(&d)) if t == d => {
                // Already in the cache: nothing to feed for it.
                a.next = None;
                kept += 1;
            }
            _ => break,
        }
    }
    // The state holds the row-0 token and the kept drafts; the token
    // sampled last (if any) is fed at the next step.
    let keep = base + 1 + kept;
    slot.state.truncate(keep);
    slot.cached.truncate(keep);
    if let Some(d) = a.drafter.as_mut() {
        d.feedback(k, kept);
    }
    metrics.spec_checks_total.fetch_add(1, Ordering::Relaxed);
    metrics
        .spec_drafted_total
        .fetch_add(k as u64, Ordering::Relaxed);
    metrics
        .spec_accepted_total
        .fetch_add(kept as u64, Ordering::Relaxed);
    outcome
}

/// Sends what is held back and the final event.
fn finish(mut a: Active, reason: FinishReason) {
    let (tail, reason) = a.reply.end(reason);
    let now = Instant::now();
    let _ = a.tx.send(Event::Done(Done {
        finish: reason,
        tail,
        usage: Usage {
            prompt_tokens: a.prompt.len(),
            cached_tokens: a.n_reused,
            completion_tokens: a.n_generated,
        },
        time_to_first_token: a.first_token.unwrap_or(now - a.submitted),
        total_time: now - a.submitted,
        end_logprob: a.end_logprob.take(),
    }));
}

/// Sets the logits of tokens the constraint rejects to -inf. Tokens with
/// no text (control tokens) are rejected, except end-of-generation ones
/// once the output is complete.
fn mask(c: &dyn Constraint, tokenizer: &Tokenizer, logits: &mut [f32]) {
    let can_end = c.can_end();
    for (id, l) in logits.iter_mut().enumerate() {
        let id = id as u32;
        let ok = if tokenizer.is_eog(id) {
            can_end
        } else {
            let piece = tokenizer.piece(id, false);
            !piece.is_empty() && c.allows(piece)
        };
        if !ok {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// The log of the softmax's denominator, and the `k` most likely tokens
/// with their log-probabilities.
fn logprob_stats(logits: &[f32], k: usize) -> (f64, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() < k || l > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, x)| x >= l);
                top.insert(at, (i as u32, l));
                top.truncate(k);
            }
        }
    }
    (lse, top.into_iter().map(|(i, l)| (i, lp(l))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_the_f32_route() {
        // Short prompts go whole or in pieces of what fits.
        assert_eq!(Scheduler::chunk_len(10, 100, false), 10);
        assert_eq!(Scheduler::chunk_len(50, 20, false), 20);
        // Long prompts: every chunk and every remainder at least 64.
        assert_eq!(Scheduler::chunk_len(300, 512, true), 300);
        assert_eq!(Scheduler::chunk_len(600, 512, true), 512);
        assert_eq!(Scheduler::chunk_len(550, 512, true), 486);
        assert_eq!(Scheduler::chunk_len(127, 100, true), 0);
        assert_eq!(Scheduler::chunk_len(200, 63, true), 0);
        assert_eq!(Scheduler::chunk_len(200, 100, true), 100);
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 0.5];
        let (lse, top) = logprob_stats(&logits, 2);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        assert!((2.0 - lse - (2.0f64.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2]);
        assert!((top[0].1 as f64 - (3.0f64.exp() / z).ln()).abs() < 1e-6);
    }
}
