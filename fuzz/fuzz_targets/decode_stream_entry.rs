//! Fuzz target: the Redis stream entry decoder (one `event` field or one field per key): as the envelope's, round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::redis::decode_stream_entry(input));
