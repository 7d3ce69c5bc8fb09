//! Waking followers when another process commits a change: a connection of
//! its own (outside the pool) LISTENs on [`CHANNEL`], and every
//! notification bumps a generation counter that blocked callers of
//! `wait_for_change` watch.
//!
//! The connection is made again, with a growing pause, whenever it is lost;
//! each loss and each new start of listening wakes the waiters too, since a
//! notification may have been missed meanwhile. Followers poll anyway, so
//! a missed notification costs at most one of their waits.

use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The channel every change is announced on, in the transaction that
/// records it.
pub(crate) const CHANNEL: &str = "agentauth_changes";

/// The pause before connecting again grows from this...
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// ...up to this.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// A generation counter that notifications bump, and the waiters on it.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    bumped: Condvar,
}

impl Signal {
    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        *self.lock()
    }

    /// Wakes every waiter.
    pub(crate) fn bump(&self) {
        *self.lock() += 1;
        self.bumped.notify_all();
    }

    /// Blocks until the generation is past `seen`, or `timeout` passes.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) {
        let guard = self.lock();
        let _ = self.bumped.wait_timeout_while(guard, timeout, |generation| *generation <= seen);
    }

    /// A waiter that panicked leaves a counter still worth reading.
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Listens for as long as the runtime runs: spawned once per store, ended
/// by the runtime's shutdown.
pub(crate) async fn listen(config: Config, signal: Arc<Signal>) {
    let mut pause = FIRST_PAUSE;
    loop {
        if session(&config, &signal).await {
            pause = FIRST_PAUSE;
        }
        // Whatever was committed while nobody listened is worth a look.
        signal.bump();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One connection's life: LISTEN, then a bump per notification until the
/// connection ends. Whether it got as far as listening.
async fn session(config: &Config, signal: &Signal) -> bool {
    // The driver bounds the TCP connect alone; this bounds the handshake.
    let limit = config.get_connect_timeout().copied().unwrap_or(LONGEST_PAUSE);
    let Ok(Ok((client, mut connection))) = tokio::time::timeout(limit, config.connect(NoTls)).await else {
        return false;
    };
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            listened = &mut listen, if !listening => {
                if listened.is_err() {
                    return false;
                }
                listening = true;
                signal.bump();
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) => signal.bump(),
                // Notices, and whatever else the server says unasked.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return listening,
            },
        }
    }
}
