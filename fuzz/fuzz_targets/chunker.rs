#![no_main]
//! Fuzz target `chunker`: see `arca_fuzz::chunker` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::chunker(data));
