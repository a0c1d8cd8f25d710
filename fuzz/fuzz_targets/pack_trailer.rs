#![no_main]
//! Fuzz target `pack_trailer`: see `arca_fuzz::pack_trailer` for what it feeds and asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_fuzz::pack_trailer(data));
