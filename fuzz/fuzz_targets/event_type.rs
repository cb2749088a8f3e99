//! Fuzz target: `parse::event_type`, `Event` and `wire::write_event` accept exactly the valid names.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::event_type(input));
