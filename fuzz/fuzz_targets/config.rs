#![no_main]
//! Fuzz target `config`: see `arca_fuzz::config` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::config(data));
