#![no_main]
//! Fuzz target `snapshot_decode`: see `arca_fuzz::snapshot_decode` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::snapshot_decode(data));
