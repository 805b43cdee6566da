//! The one rate limiter: a repeated log line goes out at most once per
//! period, and the lines held back are counted and reported with the next
//! one. [`RateLimit`] is the bare counter an actor keeps; [`RateLimitedLog`]
//! wraps one with a logger for plugins, usable from any thread.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets a repeated log line through at most once per period, counting the
/// rest.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(n)` when the line may be logged now; `n` lines were held back
    /// since the last one.
    pub fn check(&mut self, period: Duration) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A warning a plugin may repeat on every call (a server refusing points, a
/// child's stderr): logged at most once per period, with the number of
/// lines held back. Usable from any thread.
#[derive(Debug)]
pub struct RateLimitedLog {
    log: slog::Logger,
    what: String,
    period: Duration,
    limit: Mutex<RateLimit>,
}

impl RateLimitedLog {
    /// At most one line a minute about `what` (a plugin or child name).
    pub fn new(log: slog::Logger, what: impl Into<String>) -> Self {
        RateLimitedLog {
            log,
            what: what.into(),
            period: Duration::from_secs(60),
            limit: Mutex::new(RateLimit::default()),
        }
    }

    /// Logs `msg()` at WARNING unless a line went out less than a period ago.
    pub fn warn(&self, msg: impl FnOnce() -> String) {
        let Ok(mut limit) = self.limit.lock() else {
            return;
        };
        if let Some(held) = limit.check(self.period) {
            drop(limit);
            slog::warn!(self.log, "{}", msg(); "from" => &self.what, "suppressed" => held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_suppressed() {
        let mut r = RateLimit::default();
        assert_eq!(r.check(Duration::from_secs(60)), Some(0));
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::from_secs(60)), None);
        assert_eq!(r.check(Duration::ZERO), Some(2));
    }
}
