//! Fuzz target: see `nemoclaw::fuzzing::desired` for what must hold on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nemoclaw::fuzzing::desired(data));
