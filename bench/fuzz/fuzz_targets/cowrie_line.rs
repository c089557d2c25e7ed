//! Fuzz target: the loader's Cowrie line parser (`cowrie_loader::parse::parse_record`): any bytes give an event row
//! or a rejection with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cowrie_loader::parse::parse_record(data, "fuzz-sensor");
});
