#![no_main]
//! Fuzz target `tree_decode`: see `arca_fuzz::tree_decode` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::tree_decode(data));
