//! Fuzz target: `parse::last_event_id` on hostile header values, and UUIDs wrapped in whitespace.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::parse_last_event_id(input));
