//! The delivery rule every Redis fault test checks: each accepted publish delivered exactly once, in order, or covered by a gap.
//!
//! A test records every publish it makes
//! ([`publish_recorded`]) and everything each subscription yields
//! ([`record_until_end_markers`]); after the fault it publishes end markers
//! ([`publish_end_markers`]) so readers stop once everything before them has
//! arrived, and [`verify`] checks the logs event by event. [`stored_event_ids`]
//! reads a stream back, to check that nothing was stored twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use ssehub::fred::{RedisHub, Subscription};
use ssehub::{Audience, Category, Error, Event, EventId, Publisher, UserId};

use super::C;
use ssehub_harness::resp::RespValue;

/// One publish: what, when, and whether it succeeded.
#[derive(Clone, Debug)]
pub struct Published {
    pub id: EventId,
    pub audience: Audience,
    pub started: Instant,
    pub finished: Instant,
    pub ok: bool,
}

/// What one subscription yielded.
#[derive(Clone, Debug)]
pub enum Received {
    Event(EventId, Audience),
    Gap(Option<EventId>),
    /// An end marker: the reader stops after its user's and the broadcast one.
    Marker(EventId),
    Ended(String),
}

/// The event type of the markers published after everything else: a reader stops at its user's and the broadcast one.
pub const END_MARKER: &str = "test.end";

/// Every publish of a test, in the order the calls finished.
pub type PublishLog = Arc<Mutex<Vec<Published>>>;

/// Everything one subscription yielded.
pub type ReceiveLog = Arc<Mutex<Vec<Received>>>;

/// Publishes `e` through `hub` and records the outcome in `published`; returns whether it succeeded.
pub async fn publish_recorded(hub: &RedisHub<C>, published: &Mutex<Vec<Published>>, e: Event<C>) -> bool {
    let started = Instant::now();
    let ok = hub.publish(e.clone()).await.is_ok();
    let finished = Instant::now();
    published.lock().unwrap().push(Published { id: e.id(), audience: e.audience(), started, finished, ok });
    ok
}

/// Reads `subscription` into `log` until its user's and the broadcast end marker arrived, or it ended.
pub async fn record_until_end_markers(mut subscription: Subscription<C>, log: ReceiveLog) {
    let (mut own_end, mut broadcast_end) = (false, false);
    while !(own_end && broadcast_end) {
        let entry = match subscription.next().await {
            Some(Ok(event)) if event.event_type() == END_MARKER => {
                match event.audience() {
                    Audience::User(_) => own_end = true,
                    Audience::Broadcast | Audience::Group(_) => broadcast_end = true,
                }
                Received::Marker(event.id())
            }
            Some(Ok(event)) => Received::Event(event.id(), event.audience()),
            Some(Err(Error::Gap { last_delivered, .. })) => Received::Gap(last_delivered),
            Some(Err(error)) => Received::Ended(error.to_string()),
            None => Received::Ended("end of stream".into()),
        };
        let ended = matches!(entry, Received::Ended(_));
        log.lock().unwrap().push(entry);
        if ended {
            return;
        }
    }
}

/// Publishes an end marker to each of `users` and one broadcast; each must succeed.
pub async fn publish_end_markers(hub: &RedisHub<C>, users: &[UserId]) {
    let markers = users.iter().map(|u| Audience::User(*u)).chain([Audience::Broadcast]);
    for audience in markers {
        let marker = Event::new(audience, END_MARKER, C::ALL[0], "{}".to_owned()).unwrap();
        hub.publish(marker).await.expect("an end marker is published once the server is whole");
    }
}

/// What checking every subscriber found.
#[derive(Default, Debug)]
pub struct Verdict {
    pub events_expected: usize,
    pub events_delivered: usize,
    /// Successful publishes not delivered but covered by a gap signal: each lies between the
    /// gap's `last_delivered` and the next event of its audience delivered after that gap.
    pub covered_by_gap: usize,
    pub gaps_by_user: HashMap<UserId, usize>,
    pub failed_publishes: usize,
    /// Failed publishes that subscribers received all the same (the command ran, its reply was lost).
    pub failed_but_delivered: usize,
}

/// Checks every subscriber: nothing foreign, nothing twice, each audience in publish order, every
/// successful publish delivered, or covered by a gap signal event by event: the event lies
/// after the last event of its audience delivered before that gap, and before the first one
/// delivered after it. A gap's `last_delivered` is the event delivered just before it.
///
/// `published` is in the order the publishes of one audience were made (each audience's publisher
/// waits for one publish before the next); `log_of` gives what a user's subscription yielded.
pub fn verify(
    users: &[UserId],
    published: &[Published],
    log_of: impl Fn(UserId) -> Vec<Received>,
) -> Verdict {
    let by_id: HashMap<EventId, &Published> = published.iter().map(|p| (p.id, p)).collect();
    let mut verdict =
        Verdict { failed_publishes: published.iter().filter(|p| !p.ok).count(), ..Verdict::default() };
    let mut failed_delivered = HashSet::new();
    for user in users {
        let log = log_of(*user);
        if let Some(Received::Ended(why)) = log.iter().find(|r| matches!(r, Received::Ended(_))) {
            panic!("the subscription of {user} ended: {why}");
        }
        let mut seen = HashSet::new();
        let mut last_delivered = None;
        for entry in &log {
            match entry {
                Received::Event(id, audience) => {
                    assert!(audience.includes(*user), "{user} received another user's event {id}");
                    let publish =
                        by_id.get(id).unwrap_or_else(|| panic!("{user} received {id}, never published"));
                    assert!(seen.insert(*id), "{user} received {id} twice");
                    if !publish.ok {
                        failed_delivered.insert(*id);
                    }
                    last_delivered = Some(*id);
                }
                Received::Gap(said) => assert_eq!(
                    *said, last_delivered,
                    "{user}: a gap's last_delivered is not the last event delivered before it"
                ),
                Received::Marker(id) => last_delivered = Some(*id),
                Received::Ended(_) => {}
            }
        }
        verdict.gaps_by_user.insert(*user, log.iter().filter(|r| matches!(r, Received::Gap(_))).count());
        for audience in [Audience::User(*user), Audience::Broadcast] {
            let order: Vec<&Published> = published.iter().filter(|p| p.audience == audience).collect();
            let position: HashMap<EventId, usize> =
                order.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
            // The log reduced to this audience: Some(position) for an event, None for a gap.
            let steps: Vec<Option<usize>> = log
                .iter()
                .filter_map(|r| match r {
                    Received::Event(id, a) if *a == audience => Some(Some(position[id])),
                    Received::Gap(_) => Some(None),
                    _ => None,
                })
                .collect();
            let delivered: Vec<usize> = steps.iter().flatten().copied().collect();
            assert!(
                delivered.windows(2).all(|w| w[0] < w[1]),
                "{user}: events of {audience:?} out of publish order"
            );
            // The holes each gap covers: (last position before it, first position after it).
            let mut covered: Vec<(Option<usize>, Option<usize>)> = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                if step.is_none() {
                    let before = steps[..i].iter().rev().find_map(|s| *s);
                    let after = steps[i + 1..].iter().find_map(|s| *s);
                    covered.push((before, after));
                }
            }
            for (i, p) in order.iter().enumerate().filter(|(_, p)| p.ok) {
                verdict.events_expected += 1;
                if seen.contains(&p.id) {
                    verdict.events_delivered += 1;
                } else if covered
                    .iter()
                    .any(|(before, after)| before.is_none_or(|b| b < i) && after.is_none_or(|a| i < a))
                {
                    verdict.covered_by_gap += 1;
                } else {
                    panic!(
                        "{user} never received {} ({audience:?}, published successfully {:?} after the start \
                         of the run) and no gap signal covers it",
                        p.id,
                        p.started.duration_since(published[0].started)
                    );
                }
            }
        }
    }
    verdict.failed_but_delivered = failed_delivered.len();
    verdict
}

/// The event ids of a stream's entries, in entry order, from an `XRANGE key - +` reply.
pub fn stored_event_ids(xrange: &RespValue) -> Vec<EventId> {
    let entries = xrange.as_array().unwrap_or_else(|| panic!("XRANGE answered {xrange}"));
    entries
        .iter()
        .map(|entry| {
            let fields = entry.as_array().and_then(|e| e.get(1)).and_then(RespValue::as_array);
            let envelope = fields.and_then(|f| f.get(1)).and_then(RespValue::as_str).expect("an entry");
            let json: serde_json::Value = serde_json::from_str(envelope).expect("a JSON envelope");
            json["event_id"].as_str().and_then(|id| id.parse().ok()).expect("an event id")
        })
        .collect()
}

/// Panics if any event id appears twice in `ids` (a stream's entries), naming `stream`.
pub fn assert_stored_once(ids: &[EventId], stream: &str) {
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(*id), "{stream} holds event {id} twice");
    }
}
