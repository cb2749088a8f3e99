//! Tests of `ssehub::sse`: the body stream (retry, framing, heartbeats, gap, clean ends) and the request helpers.

use crate::frames::frame_of;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::channel::mpsc;
use futures::executor::block_on;
use futures::{FutureExt, Stream, StreamExt, stream};
use ssehub::fixture::ExampleCategory as C;
use ssehub::sse::{self, SseOptions, SseStream};
use ssehub::{Audience, CategorySet, Error, Event};

type Item = Result<Event<C>, Error>;

fn event(event_type: &str, category: C, data: &str) -> Event<C> {
    Event::new(Audience::Broadcast, event_type, category, data).unwrap()
}

/// The next chunk, or a panic after `limit` (a hung stream must fail the test, not hang it).
fn next_within<S: Stream<Item = Bytes> + Unpin>(body: &mut S, limit: Duration) -> Option<Bytes> {
    block_on(async {
        futures::select! {
            chunk = body.next().fuse() => chunk,
            _ = FutureExt::fuse(async_io::Timer::after(limit)) => panic!("no chunk within {limit:?}"),
        }
    })
}

fn text(chunk: &Bytes) -> &str {
    std::str::from_utf8(chunk).unwrap()
}

#[test]
fn retry_frame_comes_first_alone_with_the_configured_delay() {
    let events = stream::iter([Ok(event("ai.done", C::Ai, "{}"))]);
    let mut body = SseStream::with_options(events, SseOptions::new().retry(Duration::from_millis(1500)));
    assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), "retry: 1500\n\n");
    assert!(text(&next_within(&mut body, Duration::from_secs(5)).unwrap()).starts_with("id: "));
}

#[test]
fn default_retry_is_three_seconds() {
    let mut body = SseStream::new(stream::empty::<Item>());
    assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), "retry: 3000\n\n");
}

#[test]
fn events_parse_back_with_an_independent_sse_parser() {
    let first = event("portfolio.updated", C::Portfolio, r#"{"value":1}"#);
    let multi_line =
        event("ai.summary", C::Ai, "[\"line one\",\r\n\"line two\",\n\"line three\",\r\"data: forged\"]");
    let events = stream::iter([Ok(first.clone()), Ok(multi_line.clone())]);

    let parsed: Vec<_> = block_on(
        SseStream::new(events).map(Ok::<_, std::convert::Infallible>).eventsource().collect::<Vec<_>>(),
    );
    let parsed: Vec<_> = parsed.into_iter().map(Result::unwrap).collect();

    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[0].id, first.id().to_string());
    assert_eq!(parsed[0].event, "portfolio.updated");
    assert_eq!(parsed[0].data, r#"{"value":1}"#);
    assert_eq!(parsed[1].id, multi_line.id().to_string());
    assert_eq!(parsed[1].event, "ai.summary");
    // Every line break becomes "\n" in the parsed data; the forged field stays data.
    assert_eq!(parsed[1].data, "[\"line one\",\n\"line two\",\n\"line three\",\n\"data: forged\"]");
}

#[test]
fn events_ready_together_go_out_in_one_chunk_after_the_retry_frame() {
    let events: Vec<_> =
        (0..50).map(|i| event("import.progress", C::Import, &format!("{{\"n\":{i}}}"))).collect();
    let mut body = SseStream::new(stream::iter(events.clone().into_iter().map(Ok)));
    assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), "retry: 3000\n\n");
    let burst = next_within(&mut body, Duration::from_secs(5)).unwrap();
    let mut expected = String::new();
    for e in &events {
        expected.push_str(&frame_of(e));
    }
    assert_eq!(text(&burst), expected);
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
}

#[test]
fn streams_sending_the_same_event_send_the_same_frame() {
    // A broadcast reaches every connection as the same `Event`: the frame's fields after the
    // `id:` line are encoded once and kept with the event; each body writes its own id line
    // (a connection's cursor) and copies them behind it.
    let data = "{\n  \"pretty\": [1, 2]\r\n}";
    let shared = event("portfolio.updated", C::Portfolio, data);
    let bodies: Vec<_> = (0..3)
        .map(|_| {
            let mut body =
                SseStream::new(stream::iter([Ok::<_, Error>(shared.clone())]).chain(stream::pending()));
            assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), "retry: 3000\n\n");
            next_within(&mut body, Duration::from_secs(5)).unwrap()
        })
        .collect();
    let mut expected = String::new();
    expected.push_str(&frame_of(&shared));
    for chunk in &bodies {
        assert_eq!(text(chunk), expected);
    }
}

#[test]
fn a_users_event_is_encoded_for_each_stream_and_not_kept() {
    // Only broadcasts keep their frame: a user's event (retained by the memory hub per user)
    // is encoded by each of the user's streams, the same bytes each time.
    let user = ssehub::UserId::from_u64(7);
    let event = Event::new(Audience::User(user), "ai.done", C::Ai, "{\"n\":1}").unwrap();
    let chunks: Vec<_> = (0..2)
        .map(|_| {
            let mut body =
                SseStream::new(stream::iter([Ok::<_, Error>(event.clone())]).chain(stream::pending()));
            next_within(&mut body, Duration::from_secs(5)).unwrap();
            next_within(&mut body, Duration::from_secs(5)).unwrap()
        })
        .collect();
    let mut expected = String::new();
    expected.push_str(&frame_of(&event));
    assert_eq!(text(&chunks[0]), expected);
    assert_eq!(chunks[0], chunks[1]);
    assert_ne!(chunks[0].as_ptr(), chunks[1].as_ptr(), "a user's event is not cached");
}

#[test]
fn heartbeat_comments_arrive_while_idle() {
    let (_sender, receiver) = mpsc::unbounded::<Item>();
    let mut body = SseStream::with_options(receiver, SseOptions::new().heartbeat(Duration::from_millis(50)));
    assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), "retry: 3000\n\n");
    for _ in 0..3 {
        assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), ": heartbeat\n\n");
    }
}

#[test]
fn heartbeat_waits_a_full_interval_after_the_last_output() {
    let interval = Duration::from_millis(300);
    let (sender, receiver) = mpsc::unbounded::<Item>();
    let mut body = SseStream::with_options(receiver, SseOptions::new().heartbeat(interval));
    next_within(&mut body, Duration::from_secs(5)).unwrap();

    // Two thirds into the first interval: a timer that is not reset by the
    // event would fire a third of an interval after it.
    std::thread::sleep(interval * 2 / 3);
    // Taken before the event is sent: the body's last output comes after it, so a correct
    // heartbeat comes a full interval after this instant at the earliest, however late this
    // thread runs; one from a timer not reset would come a third of an interval after it.
    let sent_at = Instant::now();
    sender.unbounded_send(Ok(event("security.alert", C::Security, "{}"))).unwrap();
    let chunk = next_within(&mut body, Duration::from_secs(5)).unwrap();
    assert!(text(&chunk).starts_with("id: "), "{chunk:?}");

    let heartbeat = next_within(&mut body, Duration::from_secs(10)).unwrap();
    assert_eq!(heartbeat, ": heartbeat\n\n");
    // Timers never fire early.
    assert!(sent_at.elapsed() >= interval, "heartbeat {:?} after the event", sent_at.elapsed());
}

#[test]
fn gap_becomes_a_gap_event_naming_the_last_id_and_the_stream_goes_on() {
    let before = event("data_sync.completed", C::DataSync, "{}");
    let after = event("data_sync.completed", C::DataSync, "{}");
    let events = stream::iter([
        Ok(before.clone()),
        Err(Error::Gap { last_delivered: Some(before.id()), stream: None }),
        Ok(after.clone()),
    ]);
    let chunks: Vec<Bytes> = block_on(SseStream::new(events).collect());
    let body: String = chunks.iter().map(text).collect();

    let gap = format!("event: gap\ndata: {{\"last_event_id\":\"{}\"}}\n\n", before.id());
    let mut expected = String::from("retry: 3000\n\n");
    expected.push_str(&frame_of(&before));
    expected.push_str(&gap);
    expected.push_str(&frame_of(&after));
    assert_eq!(body, expected);

    // The data is JSON with the id as a string.
    let data: serde_json::Value =
        serde_json::from_str(gap.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["last_event_id"], before.id().to_string());
}

#[test]
fn gap_before_any_event_names_no_id() {
    let events = stream::iter([Err::<Event<C>, _>(Error::Gap { last_delivered: None, stream: None })]);
    let chunks: Vec<Bytes> = block_on(SseStream::new(events).collect());
    assert_eq!(chunks[1], "event: gap\ndata: {\"last_event_id\":null}\n\n");
}

#[test]
fn lagged_ends_the_stream_after_the_events_before_it() {
    let delivered = event("provider.status", C::Provider, "{}");
    let never = event("provider.status", C::Provider, "{}");
    let (sender, receiver) = mpsc::unbounded::<Item>();
    sender.unbounded_send(Ok(delivered.clone())).unwrap();
    sender.unbounded_send(Err(Error::Lagged { last_delivered: Some(delivered.id()) })).unwrap();
    sender.unbounded_send(Ok(never)).unwrap();

    let mut body = SseStream::new(receiver);
    next_within(&mut body, Duration::from_secs(5)).unwrap();
    let last = next_within(&mut body, Duration::from_secs(5)).unwrap();
    let mut expected = String::new();
    expected.push_str(&frame_of(&delivered));
    expected.push_str(": closing: subscriber lagged behind; reconnect to resume\n\n");
    assert_eq!(text(&last), expected);
    assert_eq!(body.last_sent_id(), Some(delivered.id()), "the id the browser will send back");
    // Ends although the sender is still open and holds an event.
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
}

#[test]
fn backend_error_ends_the_stream_without_its_message() {
    let (sender, receiver) = mpsc::unbounded::<Item>();
    sender.unbounded_send(Err(Error::backend("connection to redis://secret@10.0.0.1 refused"))).unwrap();
    let mut body = SseStream::new(receiver);
    next_within(&mut body, Duration::from_secs(5)).unwrap();
    let last = next_within(&mut body, Duration::from_secs(5)).unwrap();
    assert_eq!(last, ": closing: backend error; reconnect to resume\n\n");
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
}

#[test]
fn closed_hub_ends_the_stream() {
    let (sender, receiver) = mpsc::unbounded::<Item>();
    sender.unbounded_send(Err(Error::Closed)).unwrap();
    let mut body = SseStream::new(receiver);
    next_within(&mut body, Duration::from_secs(5)).unwrap();
    assert_eq!(
        next_within(&mut body, Duration::from_secs(5)).unwrap(),
        ": closing: server shutting down\n\n"
    );
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
}

#[test]
fn body_ends_when_the_events_end() {
    let (sender, receiver) = mpsc::unbounded::<Item>();
    let mut body = SseStream::new(receiver);
    next_within(&mut body, Duration::from_secs(5)).unwrap();
    drop(sender);
    assert_eq!(next_within(&mut body, Duration::from_secs(5)), None);
}

#[test]
fn heartbeat_interval_is_never_zero() {
    assert_eq!(SseOptions::new().heartbeat(Duration::ZERO).heartbeat_interval(), SseOptions::MIN_HEARTBEAT);
}

#[test]
fn retry_beyond_u32_millis_is_capped() {
    let events = stream::empty::<Item>();
    let mut body =
        SseStream::with_options(events, SseOptions::new().retry(Duration::from_secs(u64::MAX / 2)));
    assert_eq!(next_within(&mut body, Duration::from_secs(5)).unwrap(), format!("retry: {}\n\n", u32::MAX));
}

const ID_A: &str = "01936f3c-7d5e-7a10-8b2c-3d4e5f607182";
const ID_B: &str = "01936f3c-0000-7000-8000-000000000000";

#[test]
fn last_event_id_header_wins_over_the_query_parameter() {
    let id = sse::last_event_id(Some(ID_A.as_bytes()), Some(&format!("lastEventId={ID_B}"))).unwrap();
    assert_eq!(id, Some(ID_A.parse().unwrap()));
}

#[test]
fn last_event_id_header_is_not_checked_against_a_bad_query_parameter() {
    let id = sse::last_event_id(Some(ID_A.as_bytes()), Some("lastEventId=nonsense")).unwrap();
    assert_eq!(id, Some(ID_A.parse().unwrap()));
}

#[test]
fn last_event_id_blank_header_falls_back_to_the_query_parameter() {
    let id = sse::last_event_id(Some(b"  "), Some(&format!("user=x&lastEventId={ID_B}"))).unwrap();
    assert_eq!(id, Some(ID_B.parse().unwrap()));
}

#[test]
fn last_event_id_query_parameter_is_percent_decoded() {
    let id = sse::last_event_id(None, Some(&format!("lastEventId=%20{ID_B}%20"))).unwrap();
    assert_eq!(id, Some(ID_B.parse().unwrap()));
}

#[test]
fn last_event_id_absent_everywhere_is_none() {
    assert_eq!(sse::last_event_id(None, None).unwrap(), None);
    assert_eq!(sse::last_event_id(None, Some("user=x&lastEventId=")).unwrap(), None);
}

#[test]
fn last_event_id_errors_carry_the_parser_message() {
    let expected =
        "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182";
    assert_eq!(sse::last_event_id(Some(b"42"), None).unwrap_err().to_string(), expected);
    assert_eq!(sse::last_event_id(None, Some("lastEventId=42")).unwrap_err().to_string(), expected);
    // Not UTF-8: an error, not a panic.
    assert_eq!(sse::last_event_id(Some(b"\xff\xfe"), None).unwrap_err().to_string(), expected);
    let long = "1".repeat(ssehub::parse::MAX_LAST_EVENT_ID_BYTES + 1);
    assert_eq!(
        sse::last_event_id(Some(long.as_bytes()), None).unwrap_err().to_string(),
        "invalid event id: too long"
    );
}

#[test]
fn categories_read_comma_separated_and_repeated_values() {
    let set: CategorySet<C> =
        sse::categories(Some("user=u&categories=ai,+import&categories=security")).unwrap();
    assert_eq!(set, CategorySet::only(C::Ai).with(C::Import).with(C::Security));
    let set: CategorySet<C> = sse::categories(Some("categories=portfolio%2Cprovider")).unwrap();
    assert_eq!(set, CategorySet::only(C::Portfolio).with(C::Provider));
}

#[test]
fn categories_absent_or_empty_mean_every_category() {
    assert!(sse::categories::<C>(None).unwrap().is_all());
    assert!(sse::categories::<C>(Some("user=u")).unwrap().is_all());
    assert!(sse::categories::<C>(Some("categories=")).unwrap().is_all());
}

#[test]
fn categories_errors_name_the_bad_value_and_list_the_valid_ones() {
    let error = sse::categories::<C>(Some("categories=ai,crypto%27")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid category 'crypto\\''; valid categories: data_sync, provider, ai, import, portfolio, security"
    );
    let many = vec!["categories=ai"; 65].join("&");
    assert!(
        sse::categories::<C>(Some(&many)).unwrap_err().to_string().starts_with("too many categories listed")
    );
    let long = format!("categories={}", "a".repeat(2000));
    assert!(
        sse::categories::<C>(Some(&long)).unwrap_err().to_string().starts_with("categories value too long")
    );
}

#[test]
fn response_headers_are_the_three_sse_headers() {
    assert_eq!(
        sse::RESPONSE_HEADERS,
        [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
    );
}
