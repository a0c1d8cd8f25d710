#![no_main]
//! Fuzz target `keyfile`: see `arca_fuzz::keyfile` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::keyfile(data));
