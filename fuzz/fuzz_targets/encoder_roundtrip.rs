//! Fuzz target: frames from `wire` read back unchanged by the independent `eventsource-stream` parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::encoder_roundtrip(input));
