//! Fuzz target: `parse::categories` on hostile `?categories=` values, against its reference model.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::parse_categories(input));
