//! Tests of `ssehub::shutdown`: bound SSE streams end with a short `retry:` hint on smol, async-std and tokio, and lose nothing.

use crate::frames::frame_of;
use ssehub_harness::wait::within;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{StreamExt, future};
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::shutdown::{SHUTDOWN_COMMENT, Shutdown};
use ssehub::sse::{SseOptions, SseStream};
use ssehub::{Audience, CategorySet, Event, EventId, LastEventId, Publisher, UserId, resume};

fn user(n: u128) -> UserId {
    UserId::from_uuid(uuid::Uuid::from_u128(n))
}

fn note(to: UserId, n: usize) -> Event<C> {
    Event::new(Audience::User(to), "note", C::Ai, format!("{{\"n\":{n}}}")).unwrap()
}

fn closing_chunk(retry_ms: u64) -> String {
    format!("retry: {retry_ms}\n\n: {SHUTDOWN_COMMENT}\n\n")
}

fn fixed_delay(millis: u64) -> Shutdown {
    Shutdown::with_reconnect_delay(Duration::from_millis(millis), Duration::ZERO)
}

/// A live stream, idle and waiting, is woken by a trigger from another thread:
/// it sends the retry hint and ends. Run on each executor.
async fn idle_stream_ends_with_the_retry_hint_when_triggered_elsewhere() {
    let hub = MemoryHub::<C>::new();
    let alice = user(1);
    let shutdown = fixed_delay(200);
    let events = resume(&hub, alice, None, CategorySet::all()).await.unwrap();
    // No heartbeat for an hour: only the trigger's wake-up can make the body go on.
    let options = SseOptions::new().heartbeat(Duration::from_secs(3600));
    let mut body = SseStream::with_options(events, options).with_shutdown(&shutdown);
    assert_eq!(within("the retry frame", body.next()).await.unwrap(), "retry: 3000\n\n");
    let sent = note(alice, 1);
    hub.publish(sent.clone()).await.unwrap();
    assert_eq!(within("the event", body.next()).await.unwrap(), frame_of(&sent));

    // The body is polled and waits (registering its waker) before the trigger comes, from a plain thread.
    let mut next = body.next();
    assert!(future::poll_once(&mut next).await.is_none(), "nothing to send before the trigger");
    let trigger = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || shutdown.trigger())
    };
    assert_eq!(within("the closing chunk", next).await.unwrap(), closing_chunk(200));
    assert_eq!(within("the end of the body", body.next()).await, None);
    assert_eq!(body.last_sent_id(), Some(sent.id()));
    within("the triggered future", shutdown.triggered()).await;
    trigger.join().unwrap();
}

#[test]
fn idle_stream_ends_on_trigger_on_smol() {
    smol::block_on(idle_stream_ends_with_the_retry_hint_when_triggered_elsewhere());
}

#[test]
fn idle_stream_ends_on_trigger_on_async_std() {
    async_std::task::block_on(idle_stream_ends_with_the_retry_hint_when_triggered_elsewhere());
}

#[test]
fn idle_stream_ends_on_trigger_on_tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        tokio::spawn(idle_stream_ends_with_the_retry_hint_when_triggered_elsewhere()).await.unwrap();
    });
}

#[test]
fn idle_stream_ends_on_trigger_on_futures_executor() {
    futures::executor::block_on(idle_stream_ends_with_the_retry_hint_when_triggered_elsewhere());
}

/// Events queued but not yet written at the trigger are not written; the
/// client's Last-Event-ID is the last event that was, and replay delivers the
/// rest exactly once, in order.
#[test]
fn events_queued_at_the_trigger_are_left_to_the_replay_after_reconnecting() {
    smol::block_on(async {
        let hub = MemoryHub::<C>::new();
        let alice = user(2);
        let shutdown = fixed_delay(100);
        let events = resume(&hub, alice, None, CategorySet::all()).await.unwrap();
        let mut body = events.into_sse(SseOptions::new()).with_shutdown(&shutdown);
        assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
        let first = note(alice, 0);
        hub.publish(first.clone()).await.unwrap();
        let frame = body.next().await.unwrap();
        // The frame's id is a cursor whose head is the event's id.
        let cursor = match body.last_sent() {
            Some(LastEventId::Cursor(cursor)) => cursor,
            other => panic!("a cursor was sent, not {other:?}"),
        };
        assert_eq!(cursor.event_id(), first.id());
        let without_id = frame_of(&first).replacen(&format!("id: {}\n", first.id()), "", 1);
        assert_eq!(frame, format!("id: {cursor}\n{without_id}"));

        let queued: Vec<Event<C>> = (1..=3).map(|n| note(alice, n)).collect();
        for event in &queued {
            hub.publish(event.clone()).await.unwrap();
        }
        shutdown.trigger();
        assert_eq!(body.next().await.unwrap(), closing_chunk(100));
        assert_eq!(body.next().await, None);

        // The browser reconnects with the last id it received.
        let last_event_id = body.last_sent();
        assert_eq!(last_event_id, Some(LastEventId::Cursor(cursor)));
        let mut replayed = resume(&hub, alice, last_event_id, CategorySet::all()).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..queued.len() {
            ids.push(within("a replayed event", replayed.next()).await.unwrap().unwrap().id());
        }
        assert_eq!(ids, queued.iter().map(Event::id).collect::<Vec<EventId>>());
    });
}

/// A request served after the trigger gets only the closing chunk: the client
/// goes elsewhere at once instead of holding a stream on a stopping server.
#[test]
fn stream_opened_after_the_trigger_sends_only_the_closing_chunk() {
    smol::block_on(async {
        let hub = MemoryHub::<C>::new();
        let shutdown = fixed_delay(300);
        shutdown.trigger();
        shutdown.trigger(); // a second trigger changes nothing
        let events = resume(&hub, user(3), None, CategorySet::all()).await.unwrap();
        let body = SseStream::new(events).with_shutdown(&shutdown);
        let chunks: Vec<Bytes> = body.collect().await;
        assert_eq!(chunks, [closing_chunk(300)]);
    });
}

/// Many streams ending together are told different delays, inside `min..min + spread`.
#[test]
fn reconnection_delays_are_spread_over_the_configured_range() {
    smol::block_on(async {
        let hub = MemoryHub::<C>::new();
        let shutdown =
            Shutdown::with_reconnect_delay(Duration::from_millis(500), Duration::from_millis(1000));
        let mut bodies = Vec::new();
        for n in 0..50 {
            let events = resume(&hub, user(100 + n), None, CategorySet::all()).await.unwrap();
            let mut body = SseStream::with_options(events, SseOptions::new()).with_shutdown(&shutdown);
            assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
            bodies.push(body);
        }
        shutdown.trigger();
        let mut delays = Vec::new();
        for body in &mut bodies {
            let chunk = within("a closing chunk", body.next()).await.unwrap();
            let text = std::str::from_utf8(&chunk).unwrap();
            let (retry, rest) = text.split_once("\n\n").unwrap();
            assert_eq!(rest, format!(": {SHUTDOWN_COMMENT}\n\n"));
            delays.push(retry.strip_prefix("retry: ").unwrap().parse::<u64>().unwrap());
            assert_eq!(body.next().await, None);
        }
        assert!(delays.iter().all(|delay| (500..1500).contains(delay)), "{delays:?}");
        delays.sort_unstable();
        delays.dedup();
        assert!(delays.len() >= 45, "50 streams got only {} distinct delays: {delays:?}", delays.len());
    });
}

/// A stream not bound to the signal is not affected by it.
#[test]
fn unbound_stream_goes_on_after_the_trigger() {
    smol::block_on(async {
        let hub = MemoryHub::<C>::new();
        let alice = user(4);
        let shutdown = Shutdown::new();
        let events = resume(&hub, alice, None, CategorySet::all()).await.unwrap();
        let mut body = SseStream::new(events);
        assert_eq!(body.next().await.unwrap(), "retry: 3000\n\n");
        shutdown.trigger();
        let sent = note(alice, 1);
        hub.publish(sent.clone()).await.unwrap();
        assert_eq!(within("the event", body.next()).await.unwrap(), frame_of(&sent));
    });
}
