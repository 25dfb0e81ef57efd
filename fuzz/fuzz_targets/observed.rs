//! Fuzz target: see `nemoclaw::fuzzing::observed` for what must hold on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nemoclaw::fuzzing::observed(data));
