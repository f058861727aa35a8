//! A fork-join thread pool tuned for many small parallel steps.
//!
//! A decoding step of a small model is a few hundred matrix products of a
//! few hundred rows each, so the cost of handing work to a thread and
//! waiting for it dominates unless it is a few hundred nanoseconds. Workers
//! therefore spin on a generation counter for a while after each job before
//! they sleep, the calling thread takes tasks like any worker, and tasks are
//! claimed from one atomic counter (no queues, no allocation per job).
//!
//! A worker takes part in a job only if it joins while the job is open, and
//! the caller closes the job once every task is claimed, then waits for the
//! workers that joined. A worker the operating system has not scheduled
//! (more threads than cores: two programs, or tests running side by side)
//! is therefore never waited for; its share is done by whoever is running.
//! Waiting for every worker instead costs a scheduler time slice per step,
//! which made generation tens of times slower when oversubscribed.

use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: long enough to cover the
/// single-threaded work between two parallel steps of a forward pass (norms,
/// rope, sampling), short enough that an idle server does not burn a core.
const SPIN: Duration = Duration::from_micros(1500);

/// Spins between two yields of the processor while waiting: rare enough to
/// cost nothing when each thread has its core, often enough that a thread
/// sharing a core with the one it waits for lets that one run.
const SPINS_PER_YIELD: u32 = 1 << 12;

/// `state` packs the job's generation (high 32 bits), whether it is open
/// to joining workers, and how many joined workers have not yet left.
const OPEN: u64 = 1 << 31;
const JOINED: u64 = OPEN - 1;

fn generation(state: u64) -> u32 {
    (state >> 32) as u32
}

type Task<'a> = dyn Fn(usize) + Sync + 'a;

struct Job {
    /// Lifetime-erased `&Task`: valid while the submitting call waits, which
    /// it does until the job is closed and every worker that joined it left.
    task: Option<*const Task<'static>>,
    n_tasks: usize,
}

struct Shared {
    job: UnsafeCell<Job>,
    state: AtomicU64,
    next: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the submitter, under `submit`, while the
// previous job is closed and no worker is joined to it; workers read it only
// between joining an open job and leaving it (see `Pool::run`).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    submit: Mutex<()>,
}

impl Pool {
    /// A pool that runs jobs on the calling thread plus `n_threads - 1` workers.
    pub fn new(n_threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(Job {
                task: None,
                n_tasks: 0,
            }),
            state: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 1..n_threads.max(1) {
            let sh = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("edgellama-cpu-{i}"))
                .spawn(move || worker(&sh));
            match handle {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Stop the ones already started before reporting.
                    drop(Pool {
                        shared,
                        workers,
                        submit: Mutex::new(()),
                    });
                    return Err(e);
                }
            }
        }
        Ok(Pool {
            shared,
            workers,
            submit: Mutex::new(()),
        })
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n_tasks`, spread over the pool, and
    /// returns when all calls have returned. A panic in any call is resumed
    /// here after the others finish.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        // One job at a time: the backend may be shared by several callers.
        let _guard = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY: the previous job was closed and every worker that joined
        // it has left, so none is reading `job`; the erased lifetime is
        // honoured because this function waits below until the workers
        // that join this job have left it.
        unsafe {
            let task: *const Task<'_> = f;
            *sh.job.get() = Job {
                task: Some(std::mem::transmute::<*const Task<'_>, *const Task<'static>>(task)),
                n_tasks,
            };
        }
        sh.next.store(0, Ordering::Relaxed);
        sh.panicked.store(false, Ordering::Relaxed);
        let gen = generation(sh.state.load(Ordering::Relaxed)).wrapping_add(1);
        {
            // Taking the lock orders the new generation against a worker
            // that checked the old one and is about to sleep.
            let _l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.state
                .store((u64::from(gen) << 32) | OPEN, Ordering::Release);
        }
        sh.wake.notify_all();

        let mine = panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, f, n_tasks)));
        // Every task is claimed (or this thread panicked): a worker joining
        // now would find nothing to do, so stop admitting them and wait only
        // for those still running a task.
        sh.state.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while sh.state.load(Ordering::Acquire) & JOINED != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(SPINS_PER_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if let Err(p) = mine {
            panic::resume_unwind(p);
        }
        if sh.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread of the CPU backend panicked");
        }
    }
}

fn claim_tasks(sh: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

/// Waits until the generation differs from `seen` (spinning, then
/// sleeping) and returns the state then, or `None` at shutdown.
fn wait_for_job(sh: &Shared, seen: u32) -> Option<u64> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if sh.shutdown.load(Ordering::Acquire) {
            return None;
        }
        let s = sh.state.load(Ordering::Acquire);
        if generation(s) != seen {
            return Some(s);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && start.elapsed() > SPIN {
            let mut l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            while generation(sh.state.load(Ordering::Acquire)) == seen
                && !sh.shutdown.load(Ordering::Acquire)
            {
                l = sh.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            continue;
        }
        if spins.is_multiple_of(SPINS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn worker(sh: &Shared) {
    let mut seen = 0u32;
    while let Some(s) = wait_for_job(sh, seen) {
        if s & OPEN == 0 {
            // Finished without this worker; wait for the next one.
            seen = generation(s);
            continue;
        }
        // Join: fails if the job was closed, or another worker joined first
        // (then the state is read again).
        if sh
            .state
            .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        seen = generation(s);
        // SAFETY: the submitter wrote `job` before opening this generation
        // and keeps it, and the task, alive until this worker leaves.
        let (task, n_tasks) = unsafe {
            let j = &*sh.job.get();
            (j.task.map(|t| &*t), j.n_tasks)
        };
        if let Some(task) = task {
            if panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, task, n_tasks))).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
        }
        // Leave.
        sh.state.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _l = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once() {
        for threads in 1..=4 {
            let pool = Pool::new(threads).unwrap();
            for n in [0usize, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_small_jobs_and_sleeping_workers() {
        let pool = Pool::new(3).unwrap();
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(5, &|i| {
                total.fetch_add(i + 1, Ordering::Relaxed);
            });
            if round == 1000 {
                // Let the workers fall asleep, then wake them with a job.
                std::thread::sleep(SPIN * 4);
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 15);
    }

    #[test]
    fn concurrent_callers_are_serialised() {
        let pool = Arc::new(Pool::new(2).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let sum = AtomicUsize::new(0);
                    for _ in 0..200 {
                        p.run(10, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                    sum.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 200 * 45);
        }
    }

    #[test]
    fn pools_with_more_threads_than_cores_run_every_task_once() {
        // Workers are preempted between seeing a job and joining it, and
        // jobs close while others try to join: no task may be lost or run
        // twice, and a late worker must not touch the next job's task.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let handles: Vec<_> = (0..cores * 2)
            .map(|_| {
                std::thread::spawn(move || {
                    let pool = Pool::new(3).unwrap();
                    for round in 0..1500usize {
                        let n = 1 + round % 9;
                        let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                        pool.run(n, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| {
                if i == 5 {
                    panic!("task 5");
                }
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
