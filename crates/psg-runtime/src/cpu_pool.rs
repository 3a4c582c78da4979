//! psg's CPU thread pool: where the CPU backend's parallel work runs, in this process and in any
//! process forked from it.
//!
//! Threads do not survive `fork()`. Rayon's global pool, once started, has no workers in a forked
//! child, and parallel work handed to it there waits forever; PyTorch's DataLoader workers on
//! Linux are such children. psg therefore runs its parallel work on a pool of its own, tagged with
//! the id of the process that built it: a process that finds a pool built by another (its parent)
//! builds its own. The parent's pool is left in place, never dropped: its threads are not there to
//! stop, and its memory is the one thing it costs.
//!
//! The pool has `RAYON_NUM_THREADS` threads where that variable is set, else one per CPU the
//! process may use (rayon's defaults), named `psg-cpu-N`.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// A pool and the process that built it.
struct Pool {
    pid: u32,
    pool: ThreadPool,
}

/// The latest pool built, leaked: null until the first use. Lock-free, so that a fork while
/// another thread holds a lock cannot leave the child waiting on it.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(ptr::null_mut());

/// Runs `op` on psg's CPU thread pool: rayon's parallel iterators inside it run on that pool's
/// threads. Called from one of those threads, it runs `op` there.
///
/// Fails only where this process has no pool yet and the system refuses its threads.
///
/// ```
/// use rayon::prelude::*;
///
/// let total: u64 = psg_runtime::cpu_pool::install(|| (1..=1000u64).into_par_iter().sum())?;
/// assert_eq!(total, 500_500);
/// # Ok::<(), psg_runtime::Error>(())
/// ```
pub fn install<R: Send>(op: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(pool()?.install(op))
}

/// This process's pool, built at its first use here.
fn pool() -> Result<&'static ThreadPool> {
    let pid = std::process::id();
    let mut seen = POOL.load(Ordering::Acquire);
    loop {
        // SAFETY: a non-null pointer in POOL came from `Box::into_raw` below and is never freed.
        if let Some(current) = unsafe { seen.as_ref() } {
            if current.pid == pid {
                return Ok(&current.pool);
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("psg-cpu-{i}"))
            .build()
            .map_err(|e| {
                Error::CpuThreads(format!(
                    "{e}. Allow the process more threads (ulimit -u), or set RAYON_NUM_THREADS \
                     to fewer"
                ))
            })?;
        let built = Box::into_raw(Box::new(Pool { pid, pool }));
        match POOL.compare_exchange(seen, built, Ordering::AcqRel, Ordering::Acquire) {
            // The pool it replaces, if any, is another process's: leaked on purpose.
            Ok(_) => {
                // SAFETY: just stored; never freed.
                return Ok(unsafe { &(*built).pool });
            }
            Err(now) => {
                // Another thread of this process stored one first: ours was never shared, so
                // it is dropped (its threads stop), and the loop takes the stored one.
                // SAFETY: `built` came from `Box::into_raw` and no one else has seen it.
                drop(unsafe { Box::from_raw(built) });
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn work_runs_on_psgs_own_threads() {
        let names: Vec<String> = install(|| {
            (0..64)
                .into_par_iter()
                .map(|_| std::thread::current().name().unwrap_or("").to_string())
                .collect()
        })
        .unwrap();
        assert!(names.iter().all(|n| n.starts_with("psg-cpu-")), "{names:?}");
    }

    #[test]
    fn one_pool_a_process_however_many_threads_ask_at_once() {
        let pools: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| pool().unwrap() as *const ThreadPool as usize))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(pools.windows(2).all(|w| w[0] == w[1]), "{pools:?}");
    }

    #[test]
    fn install_from_a_pool_thread_runs_in_place() {
        let inner = install(|| {
            let outer = std::thread::current().id();
            install(move || std::thread::current().id() == outer).unwrap()
        })
        .unwrap();
        assert!(inner);
    }
}
