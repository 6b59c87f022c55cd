//! The stop deadline, shared by the poll loop (which sets it), the sender thread (which stops
//! retrying at it) and the credential sources (which must not outlive it).
//!
//! Waiting on it is how the sender sleeps between retries: a stop, or a second stop request
//! that brings the deadline forward, wakes it at once.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A deadline that is unset until the daemon stops, and only ever moves earlier.
#[derive(Debug, Default)]
pub struct StopSignal {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the deadline, or brings it forward to `deadline`; wakes every waiter.
    pub fn stop_by(&self, deadline: Instant) {
        let mut d = self.lock();
        *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        self.changed.notify_all();
    }

    /// The deadline, once the daemon is stopping.
    pub fn deadline(&self) -> Option<Instant> {
        *self.lock()
    }

    /// Sleeps until `until`, or until the deadline if that is earlier (also if it is set or
    /// moved meanwhile).
    pub fn sleep_until(&self, until: Instant) {
        let mut d = self.lock();
        loop {
            let limit = d.map_or(until, |d| d.min(until));
            let now = Instant::now();
            if now >= limit {
                return;
            }
            d = self
                .changed
                .wait_timeout(d, limit - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How long a wait that starts now may last: `limit`, or less if the deadline comes first.
    pub fn bound(&self, limit: Duration) -> Duration {
        match self.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()).min(limit),
            None => limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stop_wakes_a_sleeper_and_the_deadline_only_moves_earlier() {
        let s = Arc::new(StopSignal::default());
        let t0 = Instant::now();
        let sleeper = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.sleep_until(t0 + Duration::from_secs(600)))
        };
        s.stop_by(t0);
        sleeper.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(60));
        s.stop_by(t0 + Duration::from_secs(10));
        assert_eq!(
            s.deadline(),
            Some(t0),
            "a later deadline does not replace an earlier one"
        );
        assert_eq!(s.bound(Duration::from_secs(5)), Duration::ZERO);
    }
}
