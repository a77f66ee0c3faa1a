//! The compute pool: one named rayon pool that runs every model, and the
//! bridge that lets async request handlers wait for it without blocking a
//! tokio worker.
//!
//! A semaphore bounds how many runs are handed to the pool at once, so a
//! burst of requests waits asynchronously instead of piling closures into
//! rayon's queue. A panic inside a run is caught and reported as an error;
//! it never takes the pool or the server down.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::{Semaphore, oneshot};

/// Why a run did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    #[error("the computation panicked: {0}")]
    Panicked(String),
    #[error("the compute pool is shut down")]
    Closed,
}

/// The pool every model runs on.
#[derive(Debug)]
pub struct ComputePool {
    pool: rayon::ThreadPool,
    /// Runs handed to the pool and not yet finished.
    in_pool: Semaphore,
    threads: usize,
}

impl ComputePool {
    /// A pool of `threads` threads (0 = one per core) that accepts up to
    /// `max_in_pool` runs at once.
    ///
    /// # Errors
    /// When the threads cannot be spawned.
    pub fn new(threads: usize, max_in_pool: usize) -> Result<ComputePool, rayon::ThreadPoolBuildError> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ferroserve-compute-{i}"))
            .build()?;
        Ok(ComputePool { pool, in_pool: Semaphore::new(max_in_pool.max(1)), threads })
    }

    /// Number of compute threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool and waits for its result.
    ///
    /// # Errors
    /// When `f` panics.
    pub async fn run<R, F>(&self, f: F) -> Result<R, ComputeError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let _permit = self.in_pool.acquire().await.map_err(|_| ComputeError::Closed)?;
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                ComputeError::Panicked(text)
            });
            // The receiver is gone when the client went away; nothing to do.
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| ComputeError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_named_threads_and_survives_panics() {
        let pool = ComputePool::new(2, 4).unwrap();
        let name = pool.run(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.unwrap().starts_with("ferroserve-compute-"));
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err, ComputeError::Panicked("boom".into()));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
