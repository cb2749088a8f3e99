//! Side by side with the existing JSON-envelope publisher: its events are delivered and replayed, and ssehub's are readable in its layout.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::Duration;

use fred_support::{C, event, fresh_user, next_event, within};
use redis_server::{RedisServer, RespValue};
use ssehub::fred::{KeyLayout, RedisHub};
use ssehub::{Audience, Category, CategorySet, EventId, EventSource, Publisher, ReplayStatus, UserId};

/// Publishes an event the way the existing publisher does: `PUBLISH` of its JSON envelope (no
/// category), then `XADD` of one field per envelope key, as two separate commands.
fn legacy_publish(server: &RedisServer, audience: Audience, event_id: &str, event_type: &str, data: &str) {
    let user_id = match audience {
        Audience::User(user) => user.to_string(),
        Audience::Broadcast | Audience::Group(_) => String::new(),
    };
    let occurred_at = "2024-06-01T10:00:00.123456";
    // Written as Python's `json.dumps` writes it, with `data` as the same JSON text the stream gets.
    let user_field = if user_id.is_empty() { "null".to_string() } else { format!("\"{user_id}\"") };
    let envelope = format!(
        r#"{{"event_id": "{event_id}", "event_type": "{event_type}", "user_id": {user_field}, "data": {data}, "occurred_at": "{occurred_at}"}}"#
    );
    let layout = KeyLayout::standalone();
    assert!(!server.command(&["PUBLISH", &layout.channel(audience), &envelope]).is_error());
    let reply = server.command(&[
        "XADD",
        &layout.stream(audience),
        "*",
        "event_id",
        event_id,
        "event_type",
        event_type,
        "data",
        data,
        "occurred_at",
        occurred_at,
        "user_id",
        &user_id,
    ]);
    assert!(!reply.is_error(), "{reply}");
    // Its `XADD *` numbers each stream on its own, so its entries are ordered against those of
    // other streams to the millisecond only: whatever comes next goes out in a later one.
    std::thread::sleep(Duration::from_millis(2));
}

async fn default_hub(server: &RedisServer) -> RedisHub<C> {
    within("connect", RedisHub::connect(&server.url())).await.expect("connect")
}

#[test]
fn events_of_the_envelope_publisher_are_delivered_live_and_replayed() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub = default_hub(&server).await;
        let user = fresh_user();
        let mut subscription = hub.subscribe(user, CategorySet::all()).await.expect("subscribe");

        let first = event(Audience::User(user), 0);
        hub.publish(first.clone()).await.expect("publish");
        // The existing publisher makes UUIDv4 ids and writes no category.
        let legacy_id = "3f2b8c1e-5d4a-4b6f-9e7d-1a2b3c4d5e6f";
        let legacy_data = r#"{"portfolio_id": "p-1", "value": 1234.5}"#;
        legacy_publish(&server, Audience::User(user), legacy_id, "portfolio.updated", legacy_data);
        let legacy_broadcast_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        legacy_publish(
            &server,
            Audience::Broadcast,
            legacy_broadcast_id,
            "security",
            r#"{"notice":"rotate"}"#,
        );
        let last = event(Audience::User(user), 1);
        hub.publish(last.clone()).await.expect("publish");

        assert_eq!(next_event(&mut subscription, "ssehub's first event").await, first);
        let legacy = next_event(&mut subscription, "the envelope publisher's event").await;
        assert_eq!(legacy.id().to_string(), legacy_id);
        assert_eq!(legacy.event_type(), "portfolio.updated");
        assert_eq!(legacy.category(), C::Portfolio, "the category comes from the event type");
        assert_eq!(legacy.audience(), Audience::User(user));
        let data: serde_json::Value = serde_json::from_str(legacy.data()).unwrap();
        assert_eq!(data, serde_json::from_str::<serde_json::Value>(legacy_data).unwrap());
        assert_eq!(legacy.occurred_at().to_rfc3339(), "2024-06-01T10:00:00.123456+00:00");
        let legacy_broadcast = next_event(&mut subscription, "the envelope publisher's broadcast").await;
        assert_eq!(legacy_broadcast.id().to_string(), legacy_broadcast_id);
        assert_eq!(legacy_broadcast.category(), C::Security);
        assert_eq!(next_event(&mut subscription, "ssehub's last event").await, last);

        // Replay reads the one-field-per-key entries the same way.
        let replay = hub.missed_events(user, first.id(), CategorySet::all()).await.expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(replay.events, vec![legacy.clone(), legacy_broadcast.clone(), last.clone()]);
        // A UUIDv4 id is found among the newest entries, and replay goes on from there.
        let legacy_event_id: EventId = legacy_id.parse().unwrap();
        let replay =
            hub.missed_events(user, legacy_event_id, CategorySet::all()).await.expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(replay.events, vec![legacy_broadcast, last.clone()]);

        // The newest entry coming from the other publisher is replayed too.
        let newest_id = "9b2d7f0a-1c3e-4a5b-8d6f-0e1f2a3b4c5d";
        legacy_publish(&server, Audience::User(user), newest_id, "ai.finished", r#"{"ok": true}"#);
        let newest = next_event(&mut subscription, "the newest event").await;
        let replay = hub.missed_events(user, last.id(), CategorySet::all()).await.expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(replay.events, vec![newest]);
    });
}

#[test]
fn a_category_hook_maps_event_types_the_default_does_not_know() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        fn category_of(event_type: &str) -> Option<C> {
            match event_type {
                "quote.tick" => Some(C::Provider),
                other => C::from_event_type(other),
            }
        }
        let hub: RedisHub<C> = within(
            "connect",
            RedisHub::builder(&server.url()).unwrap().category_of_event_type(category_of).connect(),
        )
        .await
        .expect("connect");
        let user = fresh_user();
        let mut subscription = hub.subscribe(user, CategorySet::only(C::Provider)).await.expect("subscribe");
        legacy_publish(
            &server,
            Audience::User(user),
            "11111111-2222-4333-8444-555555555555",
            "weather",
            "{}",
        );
        legacy_publish(
            &server,
            Audience::User(user),
            "66666666-7777-4888-9999-aaaaaaaaaaaa",
            "quote.tick",
            "[1,2]",
        );
        let tick = next_event(&mut subscription, "the mapped event").await;
        assert_eq!(tick.event_type(), "quote.tick");
        assert_eq!(tick.category(), C::Provider);
        assert_eq!(tick.data(), "[1,2]");
        // "weather" maps to no category: skipped and counted (once live, the stream entry is not read).
        assert_eq!(hub.stats().skipped, 1);
    });
}

/// Subscribes a plain RESP connection, as the existing service's subscribers do.
fn legacy_subscriber(server: &RedisServer, channel: &str) -> redis_server::RespConnection {
    let mut connection = server.connect();
    connection.send(&["SUBSCRIBE", channel]).unwrap();
    let confirmation = connection.read_value().unwrap();
    assert_eq!(
        confirmation.as_array().and_then(|a| a.first()).and_then(RespValue::as_str),
        Some("subscribe")
    );
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    connection
}

fn envelope_of_message(message: &RespValue) -> serde_json::Value {
    let parts = message.as_array().expect("a message array");
    assert_eq!(parts[0].as_str(), Some("message"));
    serde_json::from_slice(parts[2].as_bytes().unwrap()).expect("the message is a JSON envelope")
}

fn assert_envelope_publisher_can_read(
    envelope: &serde_json::Value,
    published: &ssehub::Event<C>,
    user: Option<UserId>,
) {
    assert_eq!(envelope["event_id"], published.id().to_string());
    assert_eq!(envelope["event_type"], published.event_type());
    match user {
        Some(user) => assert_eq!(envelope["user_id"], user.to_string()),
        None => assert!(envelope["user_id"].is_null()),
    }
    assert!(
        envelope["data"].is_object(),
        "data is embedded as a JSON object, as the existing publisher writes it"
    );
    assert_eq!(envelope["data"], serde_json::from_str::<serde_json::Value>(published.data()).unwrap());
    let occurred_at =
        chrono::DateTime::parse_from_rfc3339(envelope["occurred_at"].as_str().unwrap()).unwrap();
    assert_eq!(occurred_at, published.occurred_at());
    assert_eq!(envelope["category"], published.category().name());
}

#[test]
fn events_ssehub_publishes_are_readable_in_the_envelope_layout() {
    let server = RedisServer::start();
    let user = fresh_user();
    let layout = KeyLayout::standalone();
    let mut user_channel = legacy_subscriber(&server, &layout.channel(Audience::User(user)));
    let mut broadcast_channel = legacy_subscriber(&server, &layout.channel(Audience::Broadcast));
    let own = event(Audience::User(user), 0);
    let broadcast = event(Audience::Broadcast, 1);
    futures::executor::block_on(async {
        let hub = default_hub(&server).await;
        hub.publish(own.clone()).await.expect("publish");
        hub.publish(broadcast.clone()).await.expect("publish");
    });

    let live = envelope_of_message(&user_channel.read_value().unwrap());
    assert_envelope_publisher_can_read(&live, &own, Some(user));
    assert!(live["stream_id"].is_string(), "live messages say where they are in the stream");
    let live = envelope_of_message(&broadcast_channel.read_value().unwrap());
    assert_envelope_publisher_can_read(&live, &broadcast, None);

    for (audience, published, user) in
        [(Audience::User(user), &own, Some(user)), (Audience::Broadcast, &broadcast, None)]
    {
        let entries = server.command(&["XRANGE", &layout.stream(audience), "-", "+"]);
        let entries = entries.as_array().expect("entries");
        assert_eq!(entries.len(), 1);
        let fields = entries[0].as_array().unwrap()[1].as_array().unwrap();
        assert_eq!(fields[0].as_str(), Some("event"), "the entry holds the envelope in one field");
        let stored: serde_json::Value = serde_json::from_slice(fields[1].as_bytes().unwrap()).unwrap();
        assert_envelope_publisher_can_read(&stored, published, user);
        let ttl = server.command(&["PTTL", &layout.stream(audience)]).as_int().unwrap();
        assert!(ttl > 0, "the stream expires (sliding with each publish)");
    }
}
