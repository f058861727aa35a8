//! How many threads the CPU backend uses when none are asked for.
//!
//! One per physical core, as llama.cpp does: two hardware threads of one
//! core share its vector units and its memory bandwidth, so a second thread
//! per core adds little to a product and costs a wait at every parallel
//! step of a forward pass.

use std::collections::HashSet;

/// The physical cores this process may run on, capped by what the system
/// lets it use (`available_parallelism`, which follows CPU quotas); every
/// available CPU where the topology cannot be read.
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(logical, |p| p.clamp(1, logical))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn physical_cores() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let allowed = status
        .as_deref()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")))
        .map(str::to_owned)
        .or_else(|| std::fs::read_to_string("/sys/devices/system/cpu/online").ok())?;
    let cpus = parse_cpu_list(allowed.trim())?;
    count_cores(&cpus, |cpu| {
        std::fs::read_to_string(format!(
            "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        ))
        .ok()
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn physical_cores() -> Option<usize> {
    None
}

/// Highest CPU number believed: a list naming more is not a CPU list.
const MAX_CPU: usize = 1 << 16;

/// A kernel CPU list ("0-3,8,10-11") as CPU numbers; `None` if malformed.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let c = part.parse().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi > MAX_CPU {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Distinct cores among `cpus`, each CPU's core named by its sibling list
/// (the same text for every hardware thread of one core); `None` when a
/// CPU's siblings cannot be read.
fn count_cores(cpus: &[usize], siblings: impl Fn(usize) -> Option<String>) -> Option<usize> {
    let mut cores = HashSet::new();
    for &cpu in cpus {
        let s = siblings(cpu)?;
        cores.insert(parse_cpu_list(s.trim())?);
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0-1,8-9,12"), Some(vec![0, 1, 8, 9, 12]));
        assert_eq!(parse_cpu_list("2,6\n".trim()), Some(vec![2, 6]));
        for bad in ["", "x", "3-1", "0-", "-2", "0-4294967295", "1,,a"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hardware_threads_of_one_core_count_once() {
        // 4 cores with 2 threads each, numbered as on most x86 machines
        // (cpu N and N + 4 share a core) and as on others (0-1 share).
        let spread = |c: usize| Some(format!("{},{}", c % 4, c % 4 + 4));
        let paired = |c: usize| Some(format!("{}-{}", c / 2 * 2, c / 2 * 2 + 1));
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(count_cores(&all, spread), Some(4));
        assert_eq!(count_cores(&all, paired), Some(4));
        // Allowed only the two threads of core 0 and one of core 1.
        assert_eq!(count_cores(&[0, 4, 1], spread), Some(2));
        // One thread per core.
        assert_eq!(count_cores(&all, |c| Some(c.to_string())), Some(8));
        // Unreadable topology: no answer rather than a guess.
        assert_eq!(count_cores(&all, |_| None), None);
    }

    #[test]
    fn the_default_is_at_least_one_and_at_most_the_available_cpus() {
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = default_threads();
        assert!((1..=logical).contains(&t), "{t} of {logical}");
    }
}
