//! Keeps a long-running task alive: a panic (or an unexpected end) is logged
//! and the task started again after a jittered backoff, so one bug in, say, the
//! Docker events follower degrades the agent for a moment instead of ending it.

use std::any::Any;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::retry::Backoff;

/// A run that lasted this long was healthy: the next restart starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Spawns `make()` and spawns it again whenever it panics or returns. Aborting
/// the returned handle stops the current run too.
pub fn spawn_supervised<F, Fut>(name: &'static str, make: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_supervised_with(
        name,
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        make,
    )
}

fn spawn_supervised_with<F, Fut>(
    name: &'static str,
    mut backoff: Backoff,
    mut make: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            // The guard aborts the run when the supervisor itself is aborted
            // (agent stopping): a bare inner JoinHandle would leave it running.
            let mut run = AbortOnDrop(tokio::spawn(make()));
            match run.await_inner().await {
                Ok(()) => tracing::warn!(task = name, "task ended unexpectedly; restarting it"),
                Err(e) if e.is_panic() => {
                    let message = panic_message(e.into_panic());
                    tracing::error!(task = name, panic = %message, "task panicked; restarting it");
                }
                // Cancelled from outside: nothing to restart.
                Err(_) => return,
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn await_inner(&mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The text a panic carried (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(no message)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(5))
    }

    #[tokio::test]
    async fn a_panicking_task_is_started_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut done_tx = Some(done_tx);
        let counter = runs.clone();
        let handle = spawn_supervised_with("test", fast(), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let done = if n == 3 { done_tx.take() } else { None };
            async move {
                match n {
                    1 => panic!("first run fails"),
                    2 => {} // returns: restarted as well
                    _ => {
                        if let Some(d) = done {
                            let _ = d.send(());
                        }
                        std::future::pending::<()>().await
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("third run within 5 s")
            .expect("signal");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(!handle.is_finished(), "the supervisor keeps going");
        handle.abort();
    }

    #[tokio::test]
    async fn aborting_the_supervisor_stops_the_run() {
        let alive = Arc::new(AtomicU32::new(0));
        struct Mark(Arc<AtomicU32>);
        impl Drop for Mark {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let a = alive.clone();
        let handle = spawn_supervised_with("test", fast(), move || {
            a.fetch_add(1, Ordering::SeqCst);
            let mark = Mark(a.clone());
            async move {
                let _mark = mark;
                std::future::pending::<()>().await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        handle.abort();
        let _ = handle.await;
        for _ in 0..100 {
            if alive.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the inner run was not stopped with its supervisor");
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7u8)), "(no message)");
    }
}
