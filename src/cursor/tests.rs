//! The cursor's text form: its length, the canonical spellings and the refusal reasons.

use alloc::string::ToString;

use super::*;

fn event() -> EventId {
    EventId::from_uuid(Uuid::from_u128(0x0193_a6f4_5b1c_7d2e_8f30_4a5b_6c7d_8e9f))
}

#[test]
fn user_and_broadcast_cursors_fit_in_80_bytes() {
    let big = Position::entry(36u64.pow(8) - 1, 36 * 36 - 1);
    let cursor = Cursor::new(
        event(),
        UserId::from_u64(1),
        Positions { own: Some(big), broadcast: Some(big), ..Positions::NONE },
    );
    assert_eq!(cursor.to_string().len(), 73, "{cursor}");
    let today = Position::entry(1_765_000_000_000, 0);
    let cursor = Cursor::new(
        event(),
        UserId::from_u64(1),
        Positions { own: Some(today), broadcast: Some(today), ..Positions::NONE },
    );
    assert_eq!(cursor.to_string().len(), 67, "{cursor}");
}

#[test]
fn canonical_spellings_only() {
    let good = Cursor::new(
        event(),
        UserId::from_u64(1),
        Positions { own: Some(Position::entry(35, 1)), ..Positions::NONE },
    );
    let text = good.to_string();
    assert!(text.ends_with("~uz.1"), "{text}");
    assert_eq!(Cursor::parse(&text), Ok(good.clone()));
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
        ("zzzzzzzzzzzzzzz".repeat(300), CursorErrorKind::TooLong),
        (text.replace("~uz.1", "~h1~u1"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~h1~h1"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~g00000000000000021~g00000000000000011"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~g00000000000000011~g00000000000000011"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~g00000000000000011~b1"), CursorErrorKind::StreamOrder),
        (text.replace("~uz.1", "~g000000000000001"), CursorErrorKind::Group),
        (text.replace("~uz.1", "~g000000000000000G1"), CursorErrorKind::Group),
        (text.replace("~uz.1", "~g0000000000000001"), CursorErrorKind::Position),
        (alloc::format!("{}~1~00000000~u{}", event(), "z".repeat(14)), CursorErrorKind::Position),
    ] {
        assert_eq!(Cursor::parse(&bad).map_err(|e| e.kind()), Err(kind), "{bad}");
    }
}

#[test]
fn after_event_positions_round_trip() {
    let positions = Positions::after_event(event());
    let cursor = Cursor::new(event(), UserId::from_u64(3), positions.clone());
    assert_eq!(
        cursor.to_string().parse::<Cursor>().unwrap().positions_for(UserId::from_u64(3)),
        Ok(&positions)
    );
}

/// A cursor with `groups` groups seen, every stream at an entry of today's milliseconds, and a horizon.
fn cursor_with_groups(groups: u64) -> Cursor {
    let today = Position::entry(1_765_000_000_000, 0);
    let mut positions =
        Positions { own: Some(today), broadcast: Some(today), horizon: Some(today), ..Positions::NONE };
    for n in 0..groups {
        positions.groups.set(crate::GroupId::from_u64(n), Some(Position::entry(1_765_000_000_000 + n, 0)));
    }
    Cursor::new(event(), UserId::from_u64(1), positions)
}

#[test]
fn group_cursors_grow_by_26_bytes_a_group_and_round_trip() {
    // Without groups: the 67 bytes of the user's and the broadcast stream, and the horizon's 10.
    let sizes: alloc::vec::Vec<usize> =
        [0, 1, 8, 64].map(|n| cursor_with_groups(n).to_string().len()).to_vec();
    assert_eq!(sizes, [77, 103, 285, 1741]);
    for groups in [1, 8, 64] {
        let cursor = cursor_with_groups(groups);
        let text = cursor.to_string();
        assert_eq!(Cursor::parse(&text).as_ref(), Ok(&cursor), "{text}");
        let mut buf = [0; MAX_CURSOR_TEXT];
        assert_eq!(cursor.encode(&mut buf), text);
    }
    // A 65th group item is refused, so the encoder's buffer always has room.
    let text = cursor_with_groups(64).to_string();
    let beyond = alloc::format!(
        "{}~g{:016x}1~h1",
        text.strip_suffix(&alloc::format!("~h{}", Position::entry(1_765_000_000_000, 0))).unwrap(),
        u64::MAX
    );
    assert_eq!(Cursor::parse(&beyond).map_err(|e| e.kind()), Err(CursorErrorKind::Group));
}

#[test]
fn the_longest_cursor_fits_its_buffer() {
    let after = Position::AfterEvent(event());
    let mut positions =
        Positions { own: Some(after), broadcast: Some(after), horizon: Some(after), ..Positions::NONE };
    for n in 0..crate::MAX_GROUPS as u64 {
        positions.groups.set(crate::GroupId::from_u64(n), Some(after));
    }
    let text = Cursor::new(event(), UserId::from_u64(1), positions).to_string();
    assert_eq!(text.len(), MAX_CURSOR_TEXT);
    assert!(Cursor::parse(&text).is_ok());
}
