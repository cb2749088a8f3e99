//! Self-tests of the shared test harness (`ssehub_harness`): its RESP codec and its bounded waits.

use std::io;
use std::time::Duration;

use ssehub_harness::resp::{RespValue, encode_command, read_frame, read_resp};
use ssehub_harness::wait::{eventually, within_for};

#[test]
fn commands_and_replies_round_trip_through_the_codec() {
    assert_eq!(encode_command(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let bytes = b"*3\r\n:1\r\n$-1\r\n+OK\r\n-ERR no\r\n";
    let mut reader = &bytes[..];
    let (value, raw) = read_frame(&mut reader).unwrap();
    assert_eq!(
        value,
        RespValue::Array(Some(vec![
            RespValue::Integer(1),
            RespValue::Bulk(None),
            RespValue::Simple("OK".into())
        ]))
    );
    assert_eq!(raw, &bytes[..raw.len()]);
    assert_eq!(read_resp(&mut reader).unwrap(), RespValue::Error("ERR no".into()));
    assert_eq!(read_resp(&mut reader).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_wait_returns_once_its_condition_holds_and_fails_past_its_bound() {
    let mut polls = 0;
    futures_lite::future::block_on(eventually("three polls", || {
        polls += 1;
        polls == 3
    }));
    assert_eq!(polls, 3);
    let hang = std::panic::catch_unwind(|| {
        futures_lite::future::block_on(within_for(
            Duration::from_millis(20),
            "never",
            std::future::pending::<()>(),
        ))
    });
    assert!(hang.is_err());
}
