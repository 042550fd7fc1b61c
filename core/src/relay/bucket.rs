//! A token bucket of bytes: how the relay keeps a circuit, and all circuits together,
//! under a rate without dropping a byte (it stops reading; TCP pushes back on the
//! sender). Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// Least burst a limited bucket allows, so a slow rate still moves whole segments.
const MIN_BURST: u64 = 16 * 1024;

/// Bytes that may pass now, refilled at `rate` per second up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second; 0: no limit.
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes per second (0: unlimited) with a burst of an
    /// eighth of a second's worth (at least 16 KiB).
    pub fn new(rate: u64, now: Instant) -> Bucket {
        let burst = (rate / 8).max(MIN_BURST);
        Bucket {
            rate,
            burst,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Most bytes that may pass at once after a pause.
    #[cfg(test)]
    pub fn burst(&self) -> u64 {
        if self.rate == 0 {
            u64::MAX
        } else {
            self.burst
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
    }

    /// Bytes that may pass now.
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.refill(now);
        self.tokens as u64
    }

    /// Counts `n` bytes as passed (they may overdraw the bucket a little: a write may
    /// take more than was asked of the bucket, never much more).
    pub fn take(&mut self, n: u64, now: Instant) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// How long until `n` bytes (at most one burst) may pass.
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        let missing = n.min(self.burst) as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_bucket_never_waits() {
        let now = Instant::now();
        let mut b = Bucket::new(0, now);
        b.take(1 << 40, now);
        assert_eq!(b.available(now), u64::MAX);
        assert_eq!(b.wait_for(1 << 30, now), Duration::ZERO);
    }

    #[test]
    fn a_limited_bucket_passes_its_rate_and_burst_only() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1_000_000, t0);
        assert_eq!(b.burst(), 125_000);
        assert_eq!(b.available(t0), 125_000);
        b.take(125_000, t0);
        assert_eq!(b.available(t0), 0);
        let w = b.wait_for(50_000, t0);
        assert!(
            w >= Duration::from_millis(49) && w <= Duration::from_millis(51),
            "{w:?}"
        );
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.available(t1), 100_000);
        // Never more than a burst, however long the pause.
        assert_eq!(b.available(t1 + Duration::from_secs(60)), 125_000);
        // Over ten seconds, at most rate × time + burst passes.
        let mut passed = 0u64;
        let mut now = t1 + Duration::from_secs(60);
        let end = now + Duration::from_secs(10);
        while now < end {
            let n = b.available(now);
            b.take(n, now);
            passed += n;
            now += Duration::from_millis(7);
        }
        assert!(passed <= 10_000_000 + 125_000, "{passed}");
        assert!(passed >= 9_900_000, "{passed}");
        // A slow rate still allows whole segments.
        assert_eq!(Bucket::new(1000, t0).burst(), MIN_BURST);
    }
}
