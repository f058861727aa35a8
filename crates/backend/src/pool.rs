//! A fork-join thread pool tuned for many small parallel steps.
//!
//! A decoding step of a small model is a few hundred matrix products of a
//! few hundred rows each, so the cost of handing work to a thread and
//! waiting for it dominates unless it is a few hundred nanoseconds. Workers
//! therefore spin on a generation counter for a while after each job before
//! they sleep, the calling thread takes tasks like any worker, and tasks are
//! claimed from one atomic counter (no queues, no allocation per job).

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

type Task<'a> = dyn Fn(usize) + Sync + 'a;

struct Job {
    /// Lifetime-erased `&Task`: valid while the submitting call waits, which
    /// it does until every worker has finished with this generation.
    task: Option<*const Task<'static>>,
    n_tasks: usize,
}

struct Shared {
    job: UnsafeCell<Job>,
    /// Bumped once per job; workers wait for it to move.
    generation: AtomicU64,
    next: AtomicUsize,
    /// Workers that have not yet finished the current generation.
    active: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the submitter, under `submit`, while no
// worker is between seeing a new generation and decrementing `active`;
// workers only read it in that window (see `Pool::run`).
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
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
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
        // SAFETY: every worker decremented `active` for the previous job,
        // so none is reading `job`; the erased lifetime is honoured because
        // this function waits below until `active` is zero again.
        unsafe {
            let task: *const Task<'_> = f;
            *sh.job.get() = Job {
                task: Some(std::mem::transmute::<*const Task<'_>, *const Task<'static>>(task)),
                n_tasks,
            };
        }
        sh.next.store(0, Ordering::Relaxed);
        sh.panicked.store(false, Ordering::Relaxed);
        sh.active.store(self.workers.len(), Ordering::Relaxed);
        {
            // Taking the lock orders the bump against a worker that checked
            // the generation and is about to sleep.
            let _l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.generation.fetch_add(1, Ordering::Release);
        }
        sh.wake.notify_all();

        let mine = panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, f, n_tasks)));
        let mut spins = 0u32;
        while sh.active.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1 << 12) {
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

fn worker(sh: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for the next generation: spin, then sleep.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if sh.shutdown.load(Ordering::Acquire) {
                return;
            }
            if sh.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut l = sh.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                while sh.generation.load(Ordering::Acquire) == seen
                    && !sh.shutdown.load(Ordering::Acquire)
                {
                    l = sh.wake.wait(l).unwrap_or_else(|e| e.into_inner());
                }
                break;
            }
            std::hint::spin_loop();
        }
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = sh.generation.load(Ordering::Acquire);
        // SAFETY: the submitter wrote `job` before bumping the generation
        // and keeps the task alive until `active` reaches zero.
        let (task, n_tasks) = unsafe {
            let j = &*sh.job.get();
            (j.task.map(|t| &*t), j.n_tasks)
        };
        let Some(task) = task else {
            sh.active.fetch_sub(1, Ordering::AcqRel);
            continue;
        };
        if panic::catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, task, n_tasks))).is_err() {
            sh.panicked.store(true, Ordering::Relaxed);
        }
        sh.active.fetch_sub(1, Ordering::AcqRel);
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
