//! Helpers shared by the unit and integration tests (not part of the API).

/// `n` bytes that do not compress: the low bytes of xorshift64 from `seed`.
/// Every seed gives its own sequence (the state must be odd; `2 seed + 1`
/// keeps seeds apart, where `seed | 1` made 2 and 3 the same).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
