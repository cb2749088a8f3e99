//! Bad data on the Redis backend's channels and streams is skipped and counted; the subscription goes on.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::io::{BufReader, Write};
use std::net::TcpStream;

use fred_support::{C, builder, event, eventually, fresh_user, next_event, within};
use redis_server::{RedisServer, encode_command, read_resp};
use ssehub::fred::RedisHub;
use ssehub::{Audience, CategorySet, EventSource, Publisher, ReplayStatus};

/// Sends one command of raw byte arguments and returns its reply, for payloads that are not UTF-8.
fn raw_command(server: &RedisServer, args: &[&[u8]]) -> redis_server::RespValue {
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.write_all(&encode_command(args)).expect("write");
    read_resp(&mut BufReader::new(stream)).expect("reply")
}

const MAX_BYTES: usize = 2048;

#[test]
fn malformed_messages_on_a_user_channel_are_skipped_and_counted_and_delivery_goes_on() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "bad").max_message_bytes(MAX_BYTES).connect())
                .await
                .expect("connect");
        let user = fresh_user();
        let other = fresh_user();
        let channel = hub.key_layout().channel(Audience::User(user));
        let mut subscription = hub.subscribe(user, CategorySet::all()).await.expect("subscribe");
        let before = event(Audience::User(user), 0);
        hub.publish(before.clone()).await.expect("publish");

        let id = "0190163d-8694-739b-aea5-966c26f8ad91";
        let valid = |fields: &str| {
            format!(
                r#"{{"event_id":"{id}","event_type":"ai.done","data":{{"x":1}},"occurred_at":"2024-06-01T10:00:00Z"{fields}}}"#
            )
        };
        let garbage: Vec<(&str, Vec<u8>)> = vec![
            ("not JSON", b"not json at all".to_vec()),
            ("a JSON array", b"[1,2,3]".to_vec()),
            ("wrong types", br#"{"event_id":1,"event_type":true,"data":{},"occurred_at":3}"#.to_vec()),
            (
                "no data field",
                format!(r#"{{"event_id":"{id}","event_type":"ai","occurred_at":"2024-06-01T10:00:00Z"}}"#)
                    .into_bytes(),
            ),
            ("unknown category", valid(r#","category":"weather""#).into_bytes()),
            ("no category from the event type", valid("").replace("ai.done", "weather.report").into_bytes()),
            ("event id not a UUID", valid("").replace(id, "event-42").into_bytes()),
            ("bad timestamp", valid("").replace("2024-06-01T10:00:00Z", "yesterday").into_bytes()),
            ("another user's event", valid(&format!(r#","user_id":"{other}""#)).into_bytes()),
            (
                "event type with a line break",
                valid(r#","category":"ai""#).replace("ai.done", "ai\\ndone").into_bytes(),
            ),
            (
                "oversize",
                valid(&format!(r#","padding":"{}""#, "x".repeat(MAX_BYTES)).replace('\n', "")).into_bytes(),
            ),
            ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80]),
        ];
        for (what, payload) in &garbage {
            let reply = raw_command(&server, &[b"PUBLISH", channel.as_bytes(), payload]);
            assert_eq!(reply.as_int(), Some(1), "{what}: delivered to the hub's one subscriber connection");
        }

        let after = event(Audience::User(user), 1);
        hub.publish(after.clone()).await.expect("publish");
        assert_eq!(next_event(&mut subscription, "the event before the garbage").await, before);
        assert_eq!(next_event(&mut subscription, "the event after the garbage").await, after);
        let skipped = garbage.len() as u64;
        eventually("every bad message counted", || hub.stats().skipped == skipped).await;
        println!("{} bad messages skipped: {:?}", garbage.len(), hub.stats());

        // A valid envelope from another publisher on the same channel still arrives.
        let good = valid(r#","category":"ai""#);
        server.command(&["PUBLISH", &channel, &good]);
        let received = next_event(&mut subscription, "a valid foreign envelope").await;
        assert_eq!(received.id().to_string(), id);
        assert_eq!(received.data(), r#"{"x":1}"#);
    });
}

#[test]
fn malformed_stream_entries_are_skipped_in_replay_and_counted() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> =
            within("connect", builder(&server.url(), "badstream").connect()).await.expect("connect");
        let user = fresh_user();
        let stream = hub.key_layout().stream(Audience::User(user));
        let first = event(Audience::User(user), 0);
        hub.publish(first.clone()).await.expect("publish");
        for fields in [
            vec!["event", "not json"],
            vec!["unrelated", "field"],
            vec!["event_id", "x", "event_type", "ai", "data", "{}", "occurred_at", "2024-06-01T10:00:00Z"],
            vec![
                "event_id",
                "0190163d-8694-739b-aea5-966c26f8ad91",
                "event_type",
                "ai",
                "data",
                "not json",
                "occurred_at",
                "2024-06-01T10:00:00Z",
            ],
        ] {
            let mut args = vec!["XADD", stream.as_str(), "*"];
            args.extend(fields);
            assert!(!server.command(&args).is_error());
        }
        let last = event(Audience::User(user), 1);
        hub.publish(last.clone()).await.expect("publish");
        let replay = hub.missed_events(user, first.id(), CategorySet::all()).await.expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(replay.events, vec![last]);
        assert_eq!(hub.stats().skipped, 4);
    });
}
