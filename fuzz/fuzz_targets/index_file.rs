#![no_main]
//! Fuzz target `index_file`: see `arca_fuzz::index_file` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::index_file(data));
