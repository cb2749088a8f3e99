//! Sessions on the memory backend: presence counts, a stream's deadline and the exact resume after it.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::executor::block_on;
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::sse::{EXPIRED_COMMENT, SseOptions};
use ssehub::{Audience, CategorySet, Event, EventSource, LastEventId, Presence, Publisher, UserId, resume};
use ssehub_harness::wait::within;

#[test]
fn presence_counts_each_users_open_subscriptions_and_the_users_online_exactly() {
    block_on(async {
        let hub = MemoryHub::<C>::new();
        let users: Vec<UserId> = (1..=100).map(UserId::from_u64).collect();
        let mut open = Vec::new();
        for n in 0..1_000 {
            let user = users[n % 100];
            open.push((user, hub.subscribe(user, CategorySet::all()).await.unwrap()));
        }
        assert_eq!(hub.online_users().await.unwrap(), 100);
        assert_eq!(hub.streams_of(users[7]).await.unwrap(), 10);
        // All of the first 20 users' subscriptions go, and one of each other user's.
        let mut once = std::collections::HashSet::new();
        open.retain(|(user, _)| !(users[..20].contains(user) || once.insert(*user)));
        assert_eq!(hub.online_users().await.unwrap(), 80);
        assert_eq!(hub.streams_of(users[3]).await.unwrap(), 0);
        assert_eq!(hub.streams_of(users[50]).await.unwrap(), 9);
        // A disconnect takes a user offline; so does closing the hub for everyone.
        hub.disconnect(users[50]).await.unwrap();
        assert_eq!((hub.online_users().await.unwrap(), hub.streams_of(users[50]).await.unwrap()), (79, 0));
        hub.close();
        assert_eq!(hub.online_users().await.unwrap(), 0);
        drop(open);
    });
}

/// A stream given a deadline 300 ms ahead ends then; the reconnect with its last cursor gets
/// exactly what was published after that frame.
#[test]
fn a_stream_ends_at_its_deadline_and_the_reconnect_resumes_exactly_after_its_last_frame() {
    block_on(async {
        let hub = MemoryHub::<C>::new();
        let user = UserId::from_u64(1);
        let note = |n: u32| Event::new(Audience::User(user), "note", C::Ai, n.to_string()).unwrap();
        let resumed = resume(&hub, user, None, CategorySet::all()).await.unwrap();
        let deadline = SystemTime::now() + Duration::from_millis(300);
        let mut body = resumed.into_sse(SseOptions::new()).with_deadline(deadline).unwrap();
        assert_eq!(within("the retry frame", body.next()).await.unwrap(), "retry: 3000\n\n");
        hub.publish(note(1)).await.unwrap();
        within("the first frame", body.next()).await.unwrap();
        let closing = within("the deadline", body.next()).await.unwrap();
        assert!(SystemTime::now() >= deadline, "ended before its deadline");
        assert_eq!(closing, format!("retry: 250\n\n: {EXPIRED_COMMENT}\n\n"));
        assert_eq!(within("the end", body.next()).await, None);
        let last: LastEventId = body.last_sent().expect("a frame went out");

        let missed = note(2);
        hub.publish(missed.clone()).await.unwrap();
        let mut again = resume(&hub, user, Some(last), CategorySet::all()).await.unwrap();
        let replayed = within("the replay", again.next()).await.unwrap().unwrap();
        assert_eq!(replayed.id(), missed.id());
    });
}
