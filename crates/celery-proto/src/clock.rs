//! A Lamport clock like kombu's `LamportClock`: `forward` before sending, `adjust` on receipt.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct LamportClock(AtomicU64);

impl LamportClock {
    pub fn new() -> LamportClock {
        LamportClock(AtomicU64::new(0))
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Advance by one and return the new value (done before every event and pidbox message).
    pub fn forward(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `max(own, other) + 1`, on receipt of another process's clock.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = cur.max(other) + 1;
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_adjust() {
        let c = LamportClock::new();
        assert_eq!(c.forward(), 1);
        assert_eq!(c.adjust(10), 11);
        assert_eq!(c.adjust(3), 12);
        assert_eq!(c.value(), 12);
    }
}
