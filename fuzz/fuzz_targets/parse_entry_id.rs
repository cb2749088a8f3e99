//! Fuzz target: Redis stream entry ids (`ms-seq`): the documented form only, printed back, ordered as tuples.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::redis::parse_entry_id(input));
