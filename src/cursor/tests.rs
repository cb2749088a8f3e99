//! The cursor's text form: its length, the canonical spellings and the refusal reasons.

use alloc::string::ToString;

use super::*;

fn event() -> EventId {
    EventId::from_uuid(Uuid::from_u128(0x0193_a6f4_5b1c_7d2e_8f30_4a5b_6c7d_8e9f))
}

#[test]
fn user_and_broadcast_cursors_fit_in_80_bytes() {
    let big = Position::entry(36u64.pow(8) - 1, 36 * 36 - 1);
    let cursor =
        Cursor::new(event(), UserId::from_u64(1), Positions { own: Some(big), broadcast: Some(big) });
    assert_eq!(cursor.to_string().len(), 73, "{cursor}");
    let today = Position::entry(1_765_000_000_000, 0);
    let cursor =
        Cursor::new(event(), UserId::from_u64(1), Positions { own: Some(today), broadcast: Some(today) });
    assert_eq!(cursor.to_string().len(), 67, "{cursor}");
}

#[test]
fn canonical_spellings_only() {
    let good = Cursor::new(
        event(),
        UserId::from_u64(1),
        Positions { own: Some(Position::entry(35, 1)), broadcast: None },
    );
    let text = good.to_string();
    assert!(text.ends_with("~uz.1"), "{text}");
    assert_eq!(Cursor::parse(&text), Ok(good));
    for (bad, kind) in [
        (text.replace("~uz.1", "~u0z.1"), CursorErrorKind::NotCanonical),
        (text.replace("~uz.1", "~uz.0"), CursorErrorKind::NotCanonical),
        (text.replace("~uz.1", "~uZ.1"), CursorErrorKind::NotCanonical),
        (text.replace("~uz.1", "~b1~u1"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~u1~u1"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~x1"), CursorErrorKind::StreamKind),
        (text.replace("~uz.1", "~u"), CursorErrorKind::Position),
        (text.replace("~uz.1", "~u-1"), CursorErrorKind::Position),
        (text.replace("~1~", "~2~"), CursorErrorKind::Version),
        (text[..38].to_string(), CursorErrorKind::Missing),
        (text.to_uppercase(), CursorErrorKind::NotCanonical),
        ("zzzzzzzzzzzzzzz".repeat(20), CursorErrorKind::TooLong),
        (alloc::format!("{}~1~00000000~u{}", event(), "z".repeat(14)), CursorErrorKind::Position),
    ] {
        assert_eq!(Cursor::parse(&bad).map_err(|e| e.kind()), Err(kind), "{bad}");
    }
}

#[test]
fn after_event_positions_round_trip() {
    let positions = Positions::after_event(event());
    let cursor = Cursor::new(event(), UserId::from_u64(3), positions);
    assert_eq!(
        cursor.to_string().parse::<Cursor>().unwrap().positions_for(UserId::from_u64(3)),
        Ok(positions)
    );
}
