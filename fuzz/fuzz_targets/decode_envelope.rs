//! Fuzz target: the Redis channel envelope decoder, for a user and for broadcast: audience, reasons, round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::redis::decode_envelope(input));
