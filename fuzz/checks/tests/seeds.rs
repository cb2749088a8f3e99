//! Runs every committed fuzz seed (`fuzz/seeds/<target>/`) through its fuzz target's check, on stable.
//!
//! The Redis decoders' targets run with the `fred` feature only
//! (`cargo test -p ssehub-fuzz-checks --features fred`, part of the whole suite).

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The check of a fuzz target: panics if its property fails for an input.
type Check = fn(&[u8]);

/// The fuzz targets run here and the check each one runs.
const TARGETS: &[(&str, Check)] = &[
    ("parse_categories", checks::parse_categories),
    ("parse_last_event_id", checks::parse_last_event_id),
    ("parse_cursor", checks::parse_cursor),
    ("event_type", checks::event_type),
    ("encoder_roundtrip", checks::encoder_roundtrip),
    #[cfg(feature = "fred")]
    ("decode_envelope", checks::redis::decode_envelope),
    #[cfg(feature = "fred")]
    ("decode_stream_entry", checks::redis::decode_stream_entry),
    #[cfg(feature = "fred")]
    ("parse_entry_id", checks::redis::parse_entry_id),
];

/// The targets of the Redis decoders: run here with the `fred` feature only.
const FRED_TARGETS: [&str; 3] = ["decode_envelope", "decode_stream_entry", "parse_entry_id"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/checks is in fuzz/").to_path_buf()
}

/// Runs every seed of `target`, failing with the names of the seeds that fail,
/// or if the seed directory is missing or empty.
fn run_seeds(target: &str) {
    let check = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target").1;
    let dir = fuzz_dir().join("seeds").join(target);
    let mut seeds: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable seed directory").path())
        .filter(|path| path.is_file())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let failed: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let input = fs::read(seed).unwrap_or_else(|e| panic!("seed {}: {e}", seed.display()));
            catch_unwind(AssertUnwindSafe(|| check(&input))).is_err()
        })
        .map(|seed| seed.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} seeds of {target} fail: {failed:#?}", failed.len(), seeds.len());
}

#[test]
fn parse_categories_seeds_hold() {
    run_seeds("parse_categories");
}

#[test]
fn parse_last_event_id_seeds_hold() {
    run_seeds("parse_last_event_id");
}

#[test]
fn parse_cursor_seeds_hold() {
    run_seeds("parse_cursor");
}

#[test]
fn event_type_seeds_hold() {
    run_seeds("event_type");
}

#[test]
fn encoder_roundtrip_seeds_hold() {
    run_seeds("encoder_roundtrip");
}

#[cfg(feature = "fred")]
#[test]
fn decode_envelope_seeds_hold() {
    run_seeds("decode_envelope");
}

#[cfg(feature = "fred")]
#[test]
fn decode_stream_entry_seeds_hold() {
    run_seeds("decode_stream_entry");
}

#[cfg(feature = "fred")]
#[test]
fn parse_entry_id_seeds_hold() {
    run_seeds("parse_entry_id");
}

#[test]
fn every_fuzz_target_has_its_seeds_run_here() {
    let names_in = |dir: &Path, suffix: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| name.strip_suffix(suffix).map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let mut targets: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    if cfg!(not(feature = "fred")) {
        // Not run here without `fred`, but their targets and seeds must be there all the same.
        targets.extend(FRED_TARGETS.map(str::to_owned));
    }
    targets.sort();
    assert_eq!(names_in(&fuzz_dir().join("fuzz_targets"), ".rs"), targets, "fuzz targets");
    assert_eq!(names_in(&fuzz_dir().join("seeds"), ""), targets, "seed directories");
}
