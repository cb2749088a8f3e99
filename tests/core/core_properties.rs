//! Properties of the no_std core on generated input: category filters, Last-Event-ID, event types, the wire encoder.
//!
//! The encoder is checked against the independent SSE parser of the
//! `eventsource-stream` crate. The checks shared with the fuzz targets live in
//! `fuzz/checks.rs`.

use proptest::prelude::*;
use ssehub::fixture::ExampleCategory;
use ssehub::parse::{self, CategoryErrorKind, MAX_CATEGORIES_BYTES, MAX_CATEGORIES_ITEMS};
use ssehub::wire::{self, WireError};
use ssehub::{Audience, Category, CategorySet, Event, EventId};
use uuid::Uuid;

use checks::{EXAMPLE_NAMES, Split, VALID_CATEGORIES};

type Filter = CategorySet<ExampleCategory>;

fn parse_filter<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Filter, parse::CategoryError<ExampleCategory>> {
    parse::categories(values)
}

// ---------------------------------------------------------------------------
// Strategies

/// Any filter: a non-zero bit pattern over the six categories.
fn filter() -> impl Strategy<Value = Filter> {
    (1u64..64).prop_map(|bits| CategorySet::from_bits(bits).expect("a non-zero pattern of the six"))
}

/// Zero to three characters of the ASCII whitespace the parsers trim.
fn padding() -> impl Strategy<Value = String> {
    "[ \t\r\n\x0C]{0,3}"
}

/// Names that are not categories but could be mistaken for one.
fn unknown_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,24}".prop_filter("not a category", |name| !EXAMPLE_NAMES.contains(&name.as_str()))
}

/// The items of `values` joined by commas, with some commas turned into
/// boundaries between repeated values (`boundaries[i]` for the gap after item `i`).
fn into_values(items: &[String], boundaries: &[bool]) -> Vec<String> {
    let mut values = vec![String::new()];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            if boundaries[(i - 1) % boundaries.len()] {
                values.push(String::new());
            } else {
                values.last_mut().unwrap().push(',');
            }
        }
        values.last_mut().unwrap().push_str(item);
    }
    values
}

fn as_strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

/// Payloads made of the pieces that could forge fields or end an event early.
fn hostile_payload() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("\n\n".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("data:".to_owned()),
        Just("data: ".to_owned()),
        Just("id: 1".to_owned()),
        Just("event: forged".to_owned()),
        Just("retry: 10".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\0".to_owned()),
        Just("é😀".to_owned()),
        Just(r#"{"k":"v"}"#.to_owned()),
        "\\PC{0,8}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Valid event types, leading spaces and colons included.
fn valid_event_type() -> impl Strategy<Value = String> {
    prop_oneof!["[^\r\n\x00]{1,40}", " {0,2}:?[a-z.:]{1,20} ?", "[a-z]{128}"]
}

/// Invalid event types: empty, too long, or holding CR, LF or NUL.
fn invalid_event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{129,300}",
        "é{65,100}",
        "[^\r\n\x00]{0,10}[\r\n\x00][^\r\n\x00]{0,10}"
    ]
}

/// How the bytes of a stream are fed to the SSE parser.
fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        Just(Split::Whole),
        (1usize..8).prop_map(Split::Every),
        prop::collection::vec(any::<usize>(), 0..12).prop_map(Split::At),
    ]
}

// ---------------------------------------------------------------------------
// Categories

#[test]
fn every_filter_prints_as_a_value_that_reads_back_to_it() {
    for bits in 1u64..64 {
        let filter = Filter::from_bits(bits).unwrap();
        let printed = filter.to_string();
        assert_eq!(parse_filter([printed.as_str()]), Ok(filter), "{printed:?}");
        checks::check_category_set_round_trip(filter);
    }
    assert_eq!(Filter::all().to_string(), EXAMPLE_NAMES.join(","));
}

#[test]
fn unknown_name_error_names_it_and_lists_the_valid_ones() {
    let error = parse_filter(["ai,foo"]).unwrap_err();
    assert_eq!(error.kind(), CategoryErrorKind::Unknown);
    assert_eq!(error.unknown_name(), Some("foo"));
    assert_eq!(
        error.to_string(),
        "invalid category 'foo'; valid categories: data_sync, provider, ai, import, portfolio, security"
    );
}

#[test]
fn unknown_names_are_shown_escaped_and_cut_at_64_bytes_on_a_character_boundary() {
    let quoted = parse_filter(["it's\\\u{7}"]).unwrap_err();
    assert_eq!(quoted.to_string(), format!(r"invalid category 'it\'s\\\u{{7}}'; {VALID_CATEGORIES}"));

    // 63 ASCII bytes then a two-byte character: the character does not fit in 64 bytes.
    let long = format!("{}é", "x".repeat(63));
    let error = parse_filter([long.as_str()]).unwrap_err();
    assert_eq!(error.unknown_name(), Some("x".repeat(63).as_str()));
    assert_eq!(error.to_string(), format!("invalid category '{}...'; {VALID_CATEGORIES}", "x".repeat(63)));
}

#[test]
fn endless_values_are_refused_after_bounded_work() {
    let too_long = parse_filter(std::iter::repeat("")).unwrap_err();
    assert_eq!(too_long.kind(), CategoryErrorKind::TooLong);
    let too_many = parse_filter(std::iter::repeat("ai")).unwrap_err();
    assert_eq!(too_many.kind(), CategoryErrorKind::TooMany);
    let unknown = parse_filter(std::iter::repeat("ai,x")).unwrap_err();
    assert_eq!(unknown.unknown_name(), Some("x"));
}

#[test]
fn the_caps_themselves_are_accepted() {
    let at_byte_cap = format!("ai{}", " ".repeat(MAX_CATEGORIES_BYTES - 2));
    assert_eq!(parse_filter([at_byte_cap.as_str()]), Ok(Filter::only(ExampleCategory::Ai)));
    let over_byte_cap = format!("{at_byte_cap} ");
    assert_eq!(parse_filter([over_byte_cap.as_str()]).unwrap_err().kind(), CategoryErrorKind::TooLong);

    let at_item_cap = vec!["security"; MAX_CATEGORIES_ITEMS];
    assert_eq!(parse_filter(at_item_cap), Ok(Filter::only(ExampleCategory::Security)));
    let over_item_cap = vec!["security"; MAX_CATEGORIES_ITEMS + 1];
    assert_eq!(parse_filter(over_item_cap).unwrap_err().kind(), CategoryErrorKind::TooMany);
}

proptest! {
    #[test]
    fn printed_filters_read_back_from_repeated_padded_values_with_empty_items(
        filter in filter(),
        extra_names in prop::collection::vec(0usize..6, 0..6),
        empty_items in 0usize..5,
        order in prop::collection::vec(any::<u32>(), 16),
        pads in prop::collection::vec((padding(), padding()), 16),
        boundaries in prop::collection::vec(any::<bool>(), 16),
    ) {
        // The filter's names, some of them again, and some empty items, in any order.
        let names: Vec<&str> = filter.iter().map(Category::name).collect();
        let mut items: Vec<&str> = names.clone();
        items.extend(extra_names.iter().map(|i| names[i % names.len()]));
        items.extend(std::iter::repeat_n("", empty_items));
        let mut keyed: Vec<(u32, &str)> = order.iter().copied().zip(items).collect();
        keyed.sort();
        let padded: Vec<String> =
            keyed.iter().zip(&pads).map(|((_, item), (before, after))| format!("{before}{item}{after}")).collect();
        let values = into_values(&padded, &boundaries);
        prop_assert_eq!(parse_filter(as_strs(&values)), Ok(filter), "{:?}", values);
        checks::check_categories(&as_strs(&values));
    }

    #[test]
    fn values_naming_no_category_mean_every_category(
        values in prop::collection::vec("[ \t\r\n\x0C,]{0,10}", 0..5),
    ) {
        prop_assert!(parse_filter(as_strs(&values)).unwrap().is_all(), "{:?}", values);
    }

    #[test]
    fn arbitrary_values_parse_as_the_documented_rules_say(
        values in prop::collection::vec(
            prop_oneof![
                any::<String>(),
                "( ?(ai|provider|data_sync|import|portfolio|security|foo|AI|)\t?,?){0,40}",
                "[a-z_, ]{900,1100}",
            ],
            0..6,
        ),
    ) {
        checks::check_categories(&as_strs(&values));
    }

    #[test]
    fn a_value_over_the_byte_cap_is_too_long_whatever_it_holds(
        before in prop::collection::vec("(ai|security), ?", 0..3),
        long in prop_oneof!["\\PC{1025,3000}", "((ai|security) *,){400,700}", "[,\t ]{1025,2000}"],
    ) {
        let mut values = as_strs(&before);
        values.push(&long);
        let error = parse_filter(values.iter().copied()).unwrap_err();
        prop_assert_eq!(error.kind(), CategoryErrorKind::TooLong);
        prop_assert_eq!(
            error.to_string(),
            format!("categories value too long (at most {MAX_CATEGORIES_BYTES} bytes); {VALID_CATEGORIES}")
        );
    }

    #[test]
    fn more_names_than_the_item_cap_are_too_many(
        names in prop::collection::vec(0usize..6, MAX_CATEGORIES_ITEMS + 1..=100),
        boundaries in prop::collection::vec(any::<bool>(), 1..100),
    ) {
        let items: Vec<String> = names.iter().map(|i| EXAMPLE_NAMES[*i].to_owned()).collect();
        let values = into_values(&items, &boundaries);
        // At most 100 names of at most 9 bytes and their separators: within the byte cap.
        prop_assert!(values.iter().map(|v| v.len() + 1).sum::<usize>() <= MAX_CATEGORIES_BYTES + 1);
        let error = parse_filter(as_strs(&values)).unwrap_err();
        prop_assert_eq!(error.kind(), CategoryErrorKind::TooMany);
        prop_assert_eq!(
            error.to_string(),
            format!("too many categories listed (at most {MAX_CATEGORIES_ITEMS}); {VALID_CATEGORIES}")
        );
    }

    #[test]
    fn an_unknown_name_among_valid_ones_is_named_in_the_error(
        valid_before in prop::collection::vec(0usize..6, 0..5),
        unknown in unknown_name(),
        valid_after in prop::collection::vec(0usize..6, 0..5),
        pad in (padding(), padding()),
    ) {
        let mut items: Vec<String> = valid_before.iter().map(|i| EXAMPLE_NAMES[*i].to_owned()).collect();
        items.push(format!("{}{unknown}{}", pad.0, pad.1));
        items.extend(valid_after.iter().map(|i| EXAMPLE_NAMES[*i].to_owned()));
        let value = items.join(",");
        let error = parse_filter([value.as_str()]).unwrap_err();
        prop_assert_eq!(error.kind(), CategoryErrorKind::Unknown);
        prop_assert_eq!(error.unknown_name(), Some(unknown.as_str()));
        prop_assert_eq!(error.to_string(), format!("invalid category '{unknown}'; {VALID_CATEGORIES}"));
    }
}

// ---------------------------------------------------------------------------
// Last-Event-ID

proptest! {
    #[test]
    fn last_event_id_follows_its_rules_on_arbitrary_strings(value in any::<String>()) {
        checks::check_last_event_id(&value);
    }

    #[test]
    fn last_event_id_follows_its_rules_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        checks::parse_last_event_id(&bytes);
    }

    #[test]
    fn every_uuid_round_trips_through_last_event_id_with_surrounding_whitespace(
        uuid in any::<u128>().prop_map(Uuid::from_u128),
        uppercase in any::<bool>(),
        before in "[ \t\r\n\x0C]{0,40}",
        after in "[ \t\r\n\x0C]{0,40}",
    ) {
        let hyphenated = uuid.hyphenated().to_string();
        let written = if uppercase { hyphenated.to_uppercase() } else { hyphenated.clone() };
        let value = format!("{before}{written}{after}");
        let id = parse::last_event_id(&value).unwrap().expect("an id");
        prop_assert_eq!(id.as_uuid(), &uuid);
        prop_assert_eq!(id.to_string(), hyphenated);
        prop_assert_eq!(value.parse::<EventId>(), Ok(id));
    }

    #[test]
    fn blank_last_event_id_is_no_id(value in "[ \t\r\n\x0C]{0,128}") {
        prop_assert_eq!(parse::last_event_id(&value), Ok(None));
    }

    #[test]
    fn last_event_id_over_the_cap_is_refused_even_around_a_uuid(
        uuid in any::<u128>().prop_map(Uuid::from_u128),
        padding in parse::MAX_LAST_EVENT_ID_BYTES - 35..parse::MAX_LAST_EVENT_ID_BYTES + 300,
    ) {
        let value = format!("{}{uuid}", " ".repeat(padding));
        prop_assert!(value.len() > parse::MAX_LAST_EVENT_ID_BYTES);
        prop_assert_eq!(
            parse::last_event_id(&value).unwrap_err().to_string(),
            "invalid event id: too long"
        );
    }

    #[test]
    fn uuids_with_one_character_broken_are_refused(
        uuid in any::<u128>().prop_map(Uuid::from_u128),
        at in 0usize..36,
        replacement in any::<char>(),
        edit in 0u8..3,
    ) {
        let mut chars: Vec<char> = uuid.hyphenated().to_string().chars().collect();
        let hyphen_position = matches!(at, 8 | 13 | 18 | 23);
        match edit {
            0 => {
                // Replace with a character that does not belong at that position.
                let fits = if hyphen_position { replacement == '-' } else { replacement.is_ascii_hexdigit() };
                prop_assume!(!fits);
                chars[at] = replacement;
            }
            1 => { chars.remove(at); }
            _ => chars.insert(at, if replacement.is_ascii_whitespace() { '0' } else { replacement }),
        }
        let value: String = chars.into_iter().collect();
        prop_assert!(parse::last_event_id(&value).is_err(), "{:?} accepted", value);
    }

    #[test]
    fn uuids_in_simple_braced_or_urn_form_are_refused(uuid in any::<u128>().prop_map(Uuid::from_u128)) {
        for value in [uuid.simple().to_string(), uuid.braced().to_string(), uuid.urn().to_string()] {
            prop_assert!(parse::last_event_id(&value).is_err(), "{:?} accepted", value);
        }
    }
}

// ---------------------------------------------------------------------------
// Event types

proptest! {
    #[test]
    fn event_type_accepts_exactly_nonempty_names_of_at_most_128_bytes_without_cr_lf_or_nul(
        name in prop_oneof![any::<String>(), valid_event_type(), invalid_event_type()],
    ) {
        let valid = !name.is_empty() && name.len() <= 128 && !name.contains(['\r', '\n', '\0']);
        prop_assert_eq!(parse::event_type(&name).is_ok(), valid, "{:?}", name);
        checks::check_event_type(&name);
    }

    #[test]
    fn valid_event_types_are_accepted_unchanged(name in valid_event_type()) {
        prop_assert_eq!(parse::event_type(&name), Ok(name.as_str()));
    }
}

// ---------------------------------------------------------------------------
// The wire encoder, read back by eventsource-stream

proptest! {
    #[test]
    fn written_frames_read_back_unchanged_by_an_independent_sse_parser(
        id in prop::option::of(any::<u128>().prop_map(|n| EventId::from_uuid(Uuid::from_u128(n)))),
        event_type in prop::option::of(valid_event_type()),
        data in hostile_payload(),
        split in split(),
    ) {
        checks::check_event_round_trip(id, event_type.as_deref(), &data, &split);
    }

    #[test]
    fn encoded_events_read_back_unchanged_by_an_independent_sse_parser(
        event_type in valid_event_type(),
        data in hostile_payload(),
        split in split(),
    ) {
        let data = checks::json_keeping_line_breaks(&data);
        let event = Event::new(Audience::Broadcast, &event_type, ExampleCategory::Portfolio, data.as_str()).unwrap();
        let mut frame = String::new();
        wire::encode_event(&event, &mut frame);
        let events = checks::read_events(&frame, &split);
        prop_assert_eq!(events.len(), 1, "{:?}", frame);
        prop_assert_eq!(&events[0].id, &event.id().to_string());
        prop_assert_eq!(&events[0].event, &event_type);
        prop_assert_eq!(&events[0].data, &checks::normalise_line_breaks(&data));
    }

    #[test]
    fn events_read_back_unchanged_among_comment_and_retry_frames(
        id in prop::option::of(any::<u128>().prop_map(|n| EventId::from_uuid(Uuid::from_u128(n)))),
        event_type in prop::option::of(valid_event_type()),
        data in hostile_payload(),
        retry_millis in any::<u32>(),
        split in split(),
    ) {
        checks::check_event_among_other_frames(id, event_type.as_deref(), &data, retry_millis, &split);
    }

    #[test]
    fn comment_frames_are_no_event(text in hostile_payload(), split in split()) {
        checks::check_comment(&text, &split);
    }

    #[test]
    fn retry_frames_are_no_event_and_carry_their_delay(
        millis in any::<u32>(),
        data in hostile_payload(),
        split in split(),
    ) {
        checks::check_retry(millis, &data, &split);
    }

    #[test]
    fn a_frame_with_an_invalid_event_type_is_refused_and_writes_nothing(
        event_type in invalid_event_type(),
        data in hostile_payload(),
    ) {
        let mut out = String::from(": earlier frame\n\n");
        let written = wire::write_event(&mut out, Some(EventId::new()), Some(&event_type), &data);
        prop_assert!(matches!(written, Err(WireError::EventType(_))), "{:?}", written);
        prop_assert_eq!(out, ": earlier frame\n\n");
        prop_assert!(Event::new(Audience::Broadcast, &event_type, ExampleCategory::Ai, data).is_err());
    }
}
