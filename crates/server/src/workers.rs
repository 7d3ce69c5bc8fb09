//! A fixed pool of threads for the service's blocking work.
//!
//! A handler does blocking work (SQLite, RSA signing, plugin calls, which
//! block on the plugin host's own runtime and so cannot run on the threads
//! that drive connections). Handing each request to tokio's blocking pool
//! grows a thread per request in flight: with sixteen connections on two
//! cores, sixteen threads take turns on the cores, and the kernel's
//! switching between them was about 40% of the server's time for cheap
//! requests. This pool has a fixed number of threads (`--workers`), taking
//! jobs in the order they came: a request waits its turn rather than
//! sharing a core with every other.
//!
//! A job waits for a worker only so long, though: a plugin may hold its
//! worker for its whole timeout, and a realm whose plugins all sleep must
//! not leave another realm's requests queued behind them. A job not taken
//! within [`SPILL_AFTER`] runs on tokio's blocking pool instead, as every
//! job did before.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long a job waits for a worker before it runs on tokio's blocking
/// pool instead: far above the queueing of a busy but healthy server,
/// far below any plugin timeout a realm would set.
const SPILL_AFTER: Duration = Duration::from_millis(50);

/// The pool; dropping it lets its threads finish the queued jobs and exit.
#[derive(Debug)]
pub struct Workers {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Arc<Pending>>,
    closed: bool,
}

/// A queued job, taken by a worker or, past [`SPILL_AFTER`], by the
/// blocking pool; whoever takes it first runs it.
struct Pending(Mutex<Option<Job>>);

impl Pending {
    fn take(&self) -> Option<Job> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared { .. }")
    }
}

/// A job that panicked: its request is answered `server_error`.
#[derive(Debug)]
pub struct Panicked;

impl Workers {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        for n in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(format!("agentauth-worker-{n}")).spawn(move || work(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Runs `f` on a worker and waits for it without holding a thread.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Panicked> {
        let (done, mut answer) = tokio::sync::oneshot::channel();
        // The job runs in the caller's span: its log lines (a plugin's
        // among them) carry the request's id.
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _in_request = span.enter();
            // The receiver may be gone (the connection closed): nothing
            // then waits for the answer.
            let _ = done.send(f());
        });
        let pending = Arc::new(Pending(Mutex::new(Some(job))));
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).jobs.push_back(Arc::clone(&pending));
        self.shared.ready.notify_one();
        tokio::select! {
            answered = &mut answer => return answered.map_err(|_| Panicked),
            () = tokio::time::sleep(SPILL_AFTER) => {}
        }
        // Every worker has been busy for a while (plugins sleeping through
        // their timeouts, say): run where a thread is always found, so no
        // realm's requests queue behind another's.
        if let Some(job) = pending.take() {
            drop(tokio::task::spawn_blocking(move || run_job(job)));
        }
        // A job that panicked drops its sender unanswered.
        answer.await.map_err(|_| Panicked)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.shared.ready.notify_all();
    }
}

/// A worker's life: the next job, until the pool is closed and drained.
fn work(shared: &Shared) {
    loop {
        let pending = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(pending) = queue.jobs.pop_front() {
                    break pending;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A job the blocking pool took already is gone.
        if let Some(job) = pending.take() {
            run_job(job);
        }
    }
}

/// Runs one job; a panicking job must not take its thread with it.
fn run_job(job: Job) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
        tracing::error!("a request handler panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_spares_its_worker() {
        let workers = Workers::new(1).unwrap();
        assert_eq!(workers.run(|| 6 * 7).await.unwrap(), 42);
        #[allow(clippy::panic)]
        let failed = workers.run(|| panic!("handler bug")).await;
        assert!(failed.is_err());
        // The one worker survived its job's panic.
        assert_eq!(workers.run(|| "still here").await.unwrap(), "still here");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_finding_every_worker_held_runs_elsewhere_soon() {
        let workers = Arc::new(Workers::new(2).unwrap());
        // Let both workers reach their wait.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let blocked: Vec<_> = (0..2)
            .map(|_| {
                let (workers, hold) = (Arc::clone(&workers), Arc::clone(&hold));
                tokio::spawn(async move {
                    workers
                        .run(move || {
                            let _ = hold.lock().unwrap().recv_timeout(std::time::Duration::from_secs(5));
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Both workers are held; a third job still runs, soon.
        let started = std::time::Instant::now();
        assert_eq!(workers.run(|| 7).await.unwrap(), 7);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "the job waited for a held worker");
        release.send(()).unwrap();
        release.send(()).unwrap();
        for job in blocked {
            job.await.unwrap().unwrap();
        }
    }
}
