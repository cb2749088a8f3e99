//! Redis replays the replay script does not finish alone: more than a page of a stream, an id crowded among more entries than the script scans.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::Duration;

use fred_support::{C, builder, event, fresh_user, ids, stream_entry_of, within};
use redis_server::RedisServer;
use ssehub::fred::{RedisHub, Retention};
use ssehub::{Audience, CategorySet, Event, EventId, EventSource, Publisher, ReplayStatus};

async fn hub(server: &RedisServer, prefix: &str) -> RedisHub<C> {
    within(
        "connect",
        builder(&server.url(), prefix)
            .retention(Some(Retention::new(100_000, Duration::from_secs(3600))))
            .connect(),
    )
    .await
    .expect("connect")
}

#[test]
fn a_replay_of_more_than_a_page_of_each_stream_is_complete_and_in_order() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub = hub(&server, "pages").await;
        let user = fresh_user();
        let published: Vec<Event<C>> = (0..1_500)
            .map(|n| if n % 2 == 0 { event(Audience::User(user), n) } else { event(Audience::Broadcast, n) })
            .collect();
        // One at a time, so each stream holds its events in the order they were published: that
        // order, not the hub's replay, is what the replays are checked against.
        for e in &published {
            within("publish", hub.publish(e.clone())).await.expect("publish");
        }
        let of_stream = |events: &[Event<C>], broadcast: bool| -> Vec<EventId> {
            events
                .iter()
                .filter(|e| (e.audience() == Audience::Broadcast) == broadcast)
                .map(Event::id)
                .collect()
        };
        // Everything retained: complete, each stream in publish order.
        let stored = within("missed_events", hub.missed_events(user, EventId::new(), CategorySet::all()))
            .await
            .expect("missed_events");
        assert_eq!(stored.status, ReplayStatus::UnknownId);
        for broadcast in [false, true] {
            assert_eq!(
                of_stream(&stored.events, broadcast),
                of_stream(&published, broadcast),
                "broadcast: {broadcast}"
            );
        }
        // After the 100th: each stream's events after it, in publish order, nothing else.
        let cut = stored.events[99].id();
        let replay = within("missed_events", hub.missed_events(user, cut, CategorySet::all()))
            .await
            .expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(ids(&replay.events), ids(&stored.events[100..]), "every event after the 100th, in order");
        // On one server the streams' entry ids are one sequence: publish order across both streams.
        let cut_at = published.iter().position(|e| e.id() == cut).expect("the cut was published");
        assert_eq!(ids(&replay.events), ids(&published[cut_at + 1..]), "the events published after the cut");
    });
}

#[test]
fn an_id_behind_more_entries_of_its_millisecond_than_the_script_scans_is_still_found() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub = hub(&server, "crowded").await;
        let user = fresh_user();
        let stream = hub.key_layout().stream(Audience::User(user));
        let seen = event(Audience::User(user), 0);
        let ms = seen.id().timestamp_millis().expect("a UUIDv7");
        // 2,000 other events stored in the id's millisecond before it (as a busy publisher's
        // would be), then the id, then three more.
        let filler = stream_entry_of(&event(Audience::User(user), 1), user);
        let reply = server.command(&[
            "EVAL",
            "for i = 0, 1999 do redis.call('XADD', KEYS[1], ARGV[2] .. '-' .. i, 'event', ARGV[1]) end return 1",
            "1",
            &stream,
            &filler,
            &ms.to_string(),
        ]);
        assert_eq!(reply.as_int(), Some(1), "{reply}");
        server.command(&["XADD", &stream, &format!("{ms}-2000"), "event", &stream_entry_of(&seen, user)]);
        let after: Vec<Event<C>> = (2..5).map(|n| event(Audience::User(user), n)).collect();
        for e in &after {
            within("publish", hub.publish(e.clone())).await.expect("publish");
        }
        let replay = within("missed_events", hub.missed_events(user, seen.id(), CategorySet::all()))
            .await
            .expect("missed_events");
        assert_eq!(replay.status, ReplayStatus::Complete);
        assert_eq!(ids(&replay.events), ids(&after));
    });
}
