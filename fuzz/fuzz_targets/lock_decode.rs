#![no_main]
//! Fuzz target `lock_decode`: see `arca_fuzz::lock_decode` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::lock_decode(data));
