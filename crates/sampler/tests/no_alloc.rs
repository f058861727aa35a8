//! Sampling a token allocates nothing once the buffers have grown: the
//! full chain runs over a vocabulary-sized candidate list every token, and
//! a per-token allocation there would cost as much as the sampling itself.

use edgellama_sampler::{Sampler, SamplingParams};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

#[test]
fn steady_state_sampling_does_not_allocate() {
    let n_vocab = 4096;
    // A fixed pseudo-random logit table per step, prepared up front.
    let steps: Vec<Vec<f32>> = (0..64u32)
        .map(|s| {
            (0..n_vocab as u32)
                .map(|i| {
                    ((i.wrapping_mul(2654435761) ^ s.wrapping_mul(40503)) % 1000) as f32 / 100.0
                })
                .collect()
        })
        .collect();
    for temperature in [0.0f32, 0.9] {
        let params = SamplingParams {
            temperature,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.01,
            typical_p: 0.95,
            penalty_last_n: 16,
            repeat_penalty: 1.2,
            frequency_penalty: 0.1,
            presence_penalty: 0.1,
            logit_bias: vec![(5, -1.0), (7, f32::NEG_INFINITY)],
            seed: 1,
        };
        let mut s = Sampler::new(&params).unwrap();
        // Warm up: buffers and the penalty map reach their working size.
        for l in steps.iter().cycle().take(256) {
            s.sample(l).unwrap();
        }
        let before = allocs();
        for l in steps.iter().cycle().take(256) {
            s.sample(l).unwrap();
        }
        assert_eq!(allocs() - before, 0, "temperature {temperature}");
    }
}
