//! The compute pool: one named rayon pool that runs every model, and the
//! bridge that lets async request handlers wait for it without blocking a
//! tokio worker.
//!
//! A semaphore bounds how many runs are handed to the pool at once, so a
//! burst of requests waits asynchronously instead of piling closures into
//! rayon's queue. The runs waiting (for the semaphore or in rayon's queue)
//! are bounded too (`--max_queued_requests`): past the bound a run is
//! refused at once. A run whose caller went away before it started (an
//! expired deadline, a cancelled client) is dropped without running. A
//! panic inside a run is caught and reported as an error; it never takes the
//! pool or the server down.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, oneshot};

/// Why a run did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    #[error("the computation panicked: {0}")]
    Panicked(String),
    #[error("the compute pool is shut down")]
    Closed,
    #[error(
        "The compute queue is full: {limit} requests are already waiting to run (--max_queued_requests={limit}); retry later"
    )]
    QueueFull { limit: usize },
}

impl From<ComputeError> for crate::error::ServeError {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::QueueFull { .. } => crate::error::ServeError::Unavailable(e.to_string()),
            _ => crate::error::ServeError::Internal(e.to_string()),
        }
    }
}

/// The pool every model runs on.
#[derive(Debug)]
pub struct ComputePool {
    pool: rayon::ThreadPool,
    /// Runs handed to the pool and not yet finished.
    in_pool: Arc<Semaphore>,
    /// Runs asked for and not yet started.
    queued: Arc<AtomicUsize>,
    /// The most runs that may wait; 0 = no bound.
    max_queued: usize,
    threads: usize,
}

/// Counts one run as queued until it starts or is dropped.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        Ok(ComputePool {
            pool,
            in_pool: Arc::new(Semaphore::new(max_in_pool.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: 0,
            threads,
        })
    }

    /// With at most `max_queued` runs waiting to start (0 = no bound).
    pub fn with_max_queued(mut self, max_queued: usize) -> ComputePool {
        self.max_queued = max_queued;
        self
    }

    /// Runs waiting to start now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Number of compute threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool and waits for its result. When this future is
    /// dropped before `f` starts, `f` never runs.
    ///
    /// # Errors
    /// When `f` panics, or when `--max_queued_requests` runs are waiting
    /// already.
    pub async fn run<R, F>(&self, f: F) -> Result<R, ComputeError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
        let queued = Queued(self.queued.clone());
        if self.max_queued != 0 && waiting >= self.max_queued {
            return Err(ComputeError::QueueFull { limit: self.max_queued });
        }
        // The permit moves into the run, so a caller that goes away does
        // not free its place while the run still occupies the pool.
        let permit = self.in_pool.clone().acquire_owned().await.map_err(|_| ComputeError::Closed)?;
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let _permit = permit;
            drop(queued);
            if tx.is_closed() {
                // Nobody waits for the answer any more.
                return;
            }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_abandoned_runs_never_start() {
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;
        let pool = Arc::new(ComputePool::new(1, 4).unwrap().with_max_queued(1));
        // A occupies the only thread until released.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel();
        let a = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    let _ = started_tx.send(());
                    hold.recv().unwrap();
                })
                .await
            }
        });
        started.await.unwrap();
        // B waits in the queue.
        let ran = Arc::new(AtomicBool::new(false));
        let b = tokio::spawn({
            let (pool, ran) = (pool.clone(), ran.clone());
            async move { pool.run(move || ran.store(true, Ordering::SeqCst)).await }
        });
        while pool.queued() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // C finds the queue full.
        let err = pool.run(|| ()).await.unwrap_err();
        assert_eq!(err, ComputeError::QueueFull { limit: 1 });
        assert!(err.to_string().contains("--max_queued_requests=1"), "{err}");
        // B's caller goes away before B starts: B never runs.
        b.abort();
        let _ = b.await;
        release.send(()).unwrap();
        a.await.unwrap().unwrap();
        // B leaves the queue when the pool reaches it, without running.
        while pool.queued() != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pool.run(|| 5).await.unwrap(), 5);
        assert!(!ran.load(Ordering::SeqCst), "an abandoned run ran");
        assert_eq!(pool.queued(), 0);
    }
}
