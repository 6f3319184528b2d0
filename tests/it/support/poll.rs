//! Waiting for a real signal with a deadline, never for a fixed time: [`eventually`] polls an
//! async check (an HTTP answer, a metric value, a counter), [`eventually_blocking`] a check on a
//! plain thread (a child process's port or output).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `check` every 20 ms on this thread until it gives a value; `None` after `timeout`.
pub fn eventually_blocking<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(INTERVAL);
    }
}
