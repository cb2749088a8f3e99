//! Fuzz target: `Cursor::parse` against a model of its grammar (refusal reasons included), and cursors printed and read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::parse_cursor(input));
