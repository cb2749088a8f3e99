//! Randomized, seeded runs of concurrent publishers and a client that disconnects, lags and resumes at random points.
//!
//! Whatever the seed, the client must end up with every event meant for it
//! exactly once, in the hub's publish order (read back from the hub's own
//! replay afterwards), and each publisher's events in the order it sent them.
//! `SSEHUB_RANDOM_SEEDS=N` runs N seeds instead of the default.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures_lite::StreamExt;
use futures_lite::future::block_on;
use ssehub::Retention;
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::{
    Audience, Category, CategorySet, Error, Event, EventId, EventSource, Publisher, ReplayStatus, UserId,
    resume,
};
use uuid::Uuid;

const DEFAULT_SEEDS: u64 = 120;

/// SplitMix64: small, seedable, good enough to pick interleavings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// `future`'s output, blocking, or a panic naming `what` after the harness's bound.
fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    block_on(ssehub_harness::wait::within(what, future))
}

fn user_id(rng: &mut Rng) -> UserId {
    UserId::from_uuid(Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next())))
}

/// An event with a fresh UUIDv7, or now and then a foreign id of another version
/// (so ids do not always ascend in publish order).
fn make_event(rng: &mut Rng, audience: Audience, n: usize) -> Event<C> {
    let id = if rng.chance(8) {
        let random = u128::from(rng.next()) << 64 | u128::from(rng.next());
        // Version 4, RFC 4122 variant.
        let v4 = (random & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
        EventId::from_uuid(Uuid::from_u128(v4))
    } else {
        EventId::new()
    };
    let category = C::ALL[rng.below(C::ALL.len() as u64) as usize];
    Event::from_parts(id, audience, "random", category, format!("{{\"n\":{n}}}"), Utc::now()).unwrap()
}

/// Runs one seed; returns how many reconnects and lags it went through.
fn run(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let capacity = [2, 8, 64, 1024][rng.below(4) as usize];
    let hub = MemoryHub::<C>::builder()
        .queue_capacity(capacity)
        .retention(Some(Retention::default().with_max_events(100_000)))
        .build();
    let user = user_id(&mut rng);
    let others = [user_id(&mut rng), user_id(&mut rng)];
    let filter = if rng.chance(2) {
        CategorySet::all()
    } else {
        CategorySet::from_bits(rng.below((1 << C::ALL.len()) - 1) + 1).unwrap()
    };
    let start_category = filter.iter().next().unwrap();
    let start = Event::new(Audience::User(user), "start", start_category, "{}").unwrap();
    block_on(hub.publish(start.clone())).unwrap();

    let publishers = 1 + rng.below(3) as usize;
    let plans: Vec<Vec<Event<C>>> = (0..publishers)
        .map(|_| {
            let events = 50 + rng.below(250) as usize;
            (0..events)
                .map(|n| {
                    let audience = match rng.below(4) {
                        0 => Audience::Broadcast,
                        1 => Audience::User(others[rng.below(2) as usize]),
                        _ => Audience::User(user),
                    };
                    make_event(&mut rng, audience, n)
                })
                .collect()
        })
        .collect();
    let visible = |e: &Event<C>| e.audience().includes(user) && filter.contains(e.category());
    let expected_count = plans.iter().flatten().filter(|e| visible(e)).count();
    let publisher_of: HashMap<EventId, (usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(p, plan)| plan.iter().enumerate().map(move |(i, e)| (e.id(), (p, i))))
        .collect();

    // The client is connected before any publisher starts.
    let mut stream = within("connect", resume(&hub, user, Some(start.id().into()), filter)).expect("connect");
    assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete));

    let go = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(p, plan)| {
            let hub = hub.clone();
            let go = Arc::clone(&go);
            let mut rng = Rng(seed ^ (p as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f));
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                for event in plan {
                    block_on(hub.publish(event)).expect("publish");
                    if rng.chance(16) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    go.store(true, Ordering::Release);

    let mut received: Vec<EventId> = Vec::with_capacity(expected_count);
    let (mut reconnects, mut lags) = (0, 0);
    while received.len() < expected_count {
        match within("the next event", stream.next()) {
            Some(Ok(event)) => {
                assert!(visible(&event), "seed {seed}: an event the client must not see: {event:?}");
                received.push(event.id());
                if rng.chance(25) {
                    // Disconnect, then come back with the cursor of the last frame received.
                    let last = stream.cursor().map(Into::into);
                    drop(stream);
                    reconnects += 1;
                    stream = within("reconnect", resume(&hub, user, last, filter)).expect("reconnect");
                    assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete), "seed {seed}");
                } else if rng.chance(50) {
                    // A slow client: small queues overflow.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Some(Err(Error::Lagged { last_delivered })) => {
                lags += 1;
                assert_eq!(last_delivered, received.last().copied().or(Some(start.id())), "seed {seed}");
                let last = stream.cursor().map(Into::into);
                stream = within("reconnect", resume(&hub, user, last, filter)).expect("reconnect");
                assert_eq!(stream.replay_status(), Some(ReplayStatus::Complete), "seed {seed}");
            }
            other => panic!("seed {seed}: unexpected {other:?} after {} events", received.len()),
        }
    }
    for thread in threads {
        thread.join().expect("publisher thread");
    }

    // The hub's own order of everything the client should have seen.
    let replay = within("replay", hub.missed_events(user, start.id(), filter)).expect("replay");
    assert_eq!(replay.status, ReplayStatus::Complete);
    let hub_order: Vec<EventId> = replay.events.iter().map(Event::id).collect();
    assert_eq!(hub_order.len(), expected_count, "seed {seed}: the hub retained every event");
    if received != hub_order {
        let diverges_at = received.iter().zip(&hub_order).position(|(a, b)| a != b);
        panic!(
            "seed {seed}: {reconnects} reconnects, {lags} lags: received {} events, the hub published {} \
             for the client; first difference at {diverges_at:?}: not every event exactly once in order",
            received.len(),
            hub_order.len()
        );
    }
    let mut next_of_publisher = HashMap::new();
    for id in &received {
        let (publisher, index) = publisher_of[id];
        let previous = next_of_publisher.insert(publisher, index);
        assert!(previous < Some(index), "seed {seed}: publisher {publisher}'s events out of order");
    }
    drop(stream);
    assert_eq!(hub.stats().open_subscriptions, 0, "seed {seed}: the subscriptions were unregistered");
    (reconnects, lags)
}

#[test]
fn every_event_arrives_exactly_once_in_order_across_random_disconnects_and_lags() {
    let seeds = std::env::var("SSEHUB_RANDOM_SEEDS")
        .ok()
        .map(|n| n.parse::<u64>().expect("SSEHUB_RANDOM_SEEDS is a number"))
        .unwrap_or(DEFAULT_SEEDS);
    let (mut reconnects, mut lags) = (0, 0);
    for seed in 0..seeds {
        match catch_unwind(AssertUnwindSafe(|| run(seed))) {
            Ok((r, l)) => {
                reconnects += r;
                lags += l;
            }
            Err(_) => panic!("seed {seed} failed (see the message above); rerun it alone to debug"),
        }
    }
    eprintln!("{seeds} seeds: {reconnects} reconnects, {lags} lags");
    if seeds >= 20 {
        assert!(reconnects > 0 && lags > 0, "the seeds exercised both reconnects and lags");
    }
}
