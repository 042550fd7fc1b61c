//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::time::{Duration, Instant};

/// `len` bytes of a deterministic, non-repeating-looking pattern (xorshift), different
/// for each `seed`: file contents whose corruption or truncation a test would notice.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678 ^ seed.wrapping_mul(0x9e37_79b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Poll `f` every 10 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
