#![no_main]
//! Fuzz target `blob_open`: see `arca_fuzz::blob_open` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::blob_open(data));
