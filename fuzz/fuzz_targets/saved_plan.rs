//! Fuzz target: see `nemoclaw::fuzzing::saved_plan` for what must hold on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nemoclaw::fuzzing::saved_plan(data));
