//! The conformance checks of groups: group events reach exactly the subscriptions that read the group, and group streams resume exactly after a cursor.

use std::collections::{HashMap, HashSet};

use super::{
    C, HubFactory, HubOptions, Lcg, assert_events, fresh_user, id_list, make_event, make_event_in, next_item,
    publish, read_until, within,
};
use crate::cursor::{LastEventId, StreamKind};
use crate::{
    Audience, Category, CategorySet, Event, EventId, EventSource, GroupId, Groups, Reader, ReplayStatus,
    UserId, resume,
};

const GROUP_DELIVERY: &str = "a subscription yields a group's events exactly when its reader has the group, those its \
                              filter passes, each group stream in publish order, none twice, with positions \
                              strictly increasing within the group stream; every subscription of every member gets \
                              each of them once";
const GROUP_RESUME: &str = "after a cursor, each group stream is replayed strictly after its own position, a group \
                            without one (joined since, or nothing seen) after the cursor's horizon, a dropped group \
                            never; then live events follow, each exactly once";
const GROUP_WORKLOAD: &str = "across reconnects with changing groups, every event of each stream a client reads is \
                              delivered exactly once and in order, from its position in the cursor or, for a stream \
                              without one, from the previous connection's start";

/// A group no other check or test uses: the bits of a fresh UUIDv7.
fn fresh_group() -> GroupId {
    GroupId::from_uuid(*EventId::new().as_uuid())
}

fn reader_of(user: UserId, groups: &[GroupId]) -> Reader {
    Reader::new(user, Groups::new(groups.iter().copied()).expect("at most MAX_GROUPS groups"))
}

async fn subscribe_reader<H: EventSource<C>>(
    hub: &H,
    reader: &Reader,
    filter: CategorySet<C>,
) -> H::Subscription {
    match within("subscribe", hub.subscribe(reader, filter)).await {
        Ok(subscription) => subscription,
        Err(error) => panic!("subscribe of {reader:?} failed: {error}"),
    }
}

/// The streams `events` are in, each once, in order of first appearance.
fn kinds_of<'a>(events: impl IntoIterator<Item = &'a Event<C>>) -> Vec<StreamKind> {
    let mut kinds = Vec::new();
    for event in events {
        let kind = StreamKind::of(event.audience());
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds
}

fn of_stream(events: &[Event<C>], kind: StreamKind) -> Vec<Event<C>> {
    events.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect()
}

/// The last event of each stream in `events`, groups included: what a reader of them waits for.
fn lasts_of_every_stream(events: &[Event<C>]) -> Vec<EventId> {
    kinds_of(events)
        .into_iter()
        .filter_map(|kind| events.iter().rev().find(|e| StreamKind::of(e.audience()) == kind).map(Event::id))
        .collect()
}

/// Panics naming `rule` unless `got` and `expected` hold the same events
/// stream by stream (groups included), each in order.
///
/// `earlier` gives, for a stream read without a position of its own (from a
/// horizon), the events of that stream published before the expected ones,
/// in publish order: a backend whose horizon is a time with a slack may
/// replay a contiguous run of them immediately before the expected ones.
fn assert_streams(
    rule: &str,
    context: &str,
    got: &[Event<C>],
    expected: &[Event<C>],
    earlier: &HashMap<StreamKind, Vec<Event<C>>>,
) {
    for kind in kinds_of(got.iter().chain(expected)) {
        let (got, expected) = (of_stream(got, kind), of_stream(expected, kind));
        let mut extra = 0;
        if let Some(before) = earlier.get(&kind)
            && got.len() > expected.len()
        {
            let run = got.len() - expected.len();
            let tolerated = run <= before.len()
                && got[..run].iter().map(Event::id).eq(before[before.len() - run..].iter().map(Event::id));
            if tolerated {
                extra = run;
            }
        }
        assert_events(rule, &format!("{context}, the {kind} stream {kind:?}"), &got[extra..], &expected);
    }
}

/// Panics naming `rule` unless every group event in `got` carries a position,
/// strictly increasing within its group stream (where both are entries).
fn assert_group_positions(rule: &str, context: &str, got: &[Event<C>]) {
    for kind in kinds_of(got) {
        let StreamKind::Group(group) = kind else { continue };
        let mut last: Option<(EventId, crate::Position)> = None;
        for event in got.iter().filter(|e| StreamKind::of(e.audience()) == kind) {
            let Some(position) = event.position() else {
                panic!(
                    "rule: {rule}; {context}: the event {} of group {group} carries no position",
                    event.id()
                );
            };
            if let Some((previous, before)) = last
                && position.partial_cmp_entry(&before).is_some_and(|order| order.is_le())
            {
                panic!(
                    "rule: {rule}; {context}: in group {group}'s stream the event {} is at {position}, not after \
                     the event {previous} before it at {before}",
                    event.id()
                );
            }
            last = Some((event.id(), position));
        }
    }
}

/// Group delivery: four users read different groups: one with two
/// subscriptions reading two groups and a third subscription reading none (a
/// [`Reader`] names the groups, not the user), one with a category filter, one
/// reading one group, one reading none. Events go to three groups, a group
/// nobody reads, the users and the broadcasts. Each subscription yields
/// exactly the events its reader reads ([`Reader::reads`]) and its filter
/// passes, each stream in publish order, none twice, never a group's event it
/// does not read; group events carry positions strictly increasing within
/// their group stream.
pub async fn group_events_reach_exactly_the_subscriptions_that_read_the_group<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (g1, g2, g3, nobodys) = (fresh_group(), fresh_group(), fresh_group(), fresh_group());
    let (ann, bob, cid, dee) = (fresh_user(), fresh_user(), fresh_user(), fresh_user());
    let some = CategorySet::only(C::ALL[0]).with(C::ALL[2]).with(C::ALL[3]);
    let subscribers: Vec<(&str, Reader, CategorySet<C>)> = vec![
        ("ann's first subscription (g1, g2)", reader_of(ann, &[g1, g2]), CategorySet::all()),
        ("ann's second subscription (g1, g2)", reader_of(ann, &[g2, g1]), CategorySet::all()),
        ("ann's subscription without groups", Reader::from(ann), CategorySet::all()),
        ("bob's filtered subscription (g2, g3)", reader_of(bob, &[g2, g3]), some),
        ("cid's subscription (g3)", reader_of(cid, &[g3]), CategorySet::all()),
        ("dee's subscription without groups", reader_of(dee, &[]), CategorySet::all()),
    ];
    let mut subscriptions = Vec::new();
    for (_, reader, filter) in &subscribers {
        subscriptions.push(subscribe_reader(&hub, reader, *filter).await);
    }
    // The group nobody reads first, then every audience in turn; a marker broadcast last.
    let audiences = [
        Audience::Group(nobodys),
        Audience::Group(g1),
        Audience::Group(g2),
        Audience::User(ann),
        Audience::Group(g3),
        Audience::Broadcast,
        Audience::User(bob),
        Audience::Group(g2),
        Audience::User(cid),
        Audience::Group(nobodys),
    ];
    let mut published: Vec<Event<C>> =
        (0..40).map(|n| make_event(audiences[n % audiences.len()], n)).collect();
    published.push(make_event(Audience::Broadcast, 40));
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    for ((who, reader, filter), subscription) in subscribers.iter().zip(&mut subscriptions) {
        let expected: Vec<Event<C>> = published
            .iter()
            .filter(|e| reader.reads(e.audience()) && filter.contains(e.category()))
            .cloned()
            .collect();
        let got =
            read_until(subscription, &lasts_of_every_stream(&expected), &ours, who, GROUP_DELIVERY).await;
        if let Some(foreign) = got.iter().find(|e| !reader.reads(e.audience())) {
            panic!(
                "rule: {GROUP_DELIVERY}; {who} received an event of an audience it does not read: {foreign:?}"
            );
        }
        assert_streams(GROUP_DELIVERY, who, &got, &expected, &HashMap::new());
        assert_group_positions(GROUP_DELIVERY, who, &got);
    }
}

/// Group resume (needs a hub that gives [horizons](EventSource::horizon): a
/// backend without them does not support resuming groups). A client reads
/// groups K (it sees events of), Q (it sees nothing of) and D; it takes its
/// cursor and goes. While it is away events go to K, Q, D, a group J it joins
/// at the reconnect (also while it was connected), its own stream and the
/// broadcasts. It comes back reading K, Q and J (D dropped): the replay is
/// complete and holds exactly K's events after its position, Q's and J's
/// since the first connection started, the own events and broadcasts after
/// theirs, and nothing of D. The client takes one event and goes again with
/// that frame's cursor: the next connection holds exactly the rest (a stream
/// replayed but not yet read is not lost), then live events follow exactly
/// once (none of D).
///
/// A backend whose horizon is a time with a slack may also replay, for a
/// stream without a position of its own, a few events published shortly
/// before the previous connection started: a contiguous run of that stream
/// immediately before the expected events, nothing else.
pub async fn group_streams_resume_exactly_after_the_cursor<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (user, other) = (fresh_user(), fresh_user());
    let (k, q, d, j, foreign) = (fresh_group(), fresh_group(), fresh_group(), fresh_group(), fresh_group());
    let mut n = 0;
    let mut next = |audience: Audience| {
        n += 1;
        make_event(audience, n)
    };
    let mut log: Vec<Event<C>> = Vec::new();

    // Before the first connection: never to be delivered (but as a tolerated run before a horizon).
    let early: Vec<Event<C>> = [k, q, d, j].into_iter().map(|group| next(Audience::Group(group))).collect();
    for event in &early {
        publish(&hub, event).await;
    }
    log.extend(early.iter().cloned());

    let first_reader = reader_of(user, &[k, q, d]);
    let mut stream = within("resume", resume(&hub, &first_reader, None, CategorySet::all()))
        .await
        .unwrap_or_else(|e| panic!("rule: {GROUP_RESUME}; the first resume failed: {e}"));
    let first: Vec<Event<C>> = vec![
        next(Audience::Group(k)),
        next(Audience::User(user)),
        next(Audience::Group(d)),
        next(Audience::Group(j)),
        next(Audience::Group(k)),
        next(Audience::Broadcast),
    ];
    for event in &first {
        publish(&hub, event).await;
    }
    log.extend(first.iter().cloned());
    let ours: HashSet<EventId> = log.iter().map(Event::id).collect();
    let expected: Vec<Event<C>> =
        first.iter().filter(|e| first_reader.reads(e.audience())).cloned().collect();
    let got = read_until(
        &mut stream,
        &lasts_of_every_stream(&expected),
        &ours,
        "the first connection",
        GROUP_RESUME,
    )
    .await;
    assert_streams(GROUP_RESUME, "the first connection", &got, &expected, &HashMap::new());
    let cursor = stream.cursor().expect("a cursor after events");
    drop(stream);

    // While away.
    let away: Vec<Event<C>> = vec![
        next(Audience::Group(k)),
        next(Audience::Group(q)),
        next(Audience::Group(j)),
        next(Audience::Group(d)),
        next(Audience::User(user)),
        next(Audience::User(other)),
        next(Audience::Group(foreign)),
        next(Audience::Broadcast),
        next(Audience::Group(k)),
        next(Audience::Group(q)),
        next(Audience::Group(j)),
        next(Audience::Group(d)),
    ];
    for event in &away {
        publish(&hub, event).await;
    }
    log.extend(away.iter().cloned());

    let reader = reader_of(user, &[k, q, j]);
    // Streams without a position: Q (nothing seen) and J (joined); read after the first connection's start.
    let after_start: Vec<Event<C>> =
        first.iter().chain(&away).filter(|e| reader.reads(e.audience())).cloned().collect();
    let replay_expected: Vec<Event<C>> = after_start
        .iter()
        .filter(|e| match StreamKind::of(e.audience()) {
            StreamKind::Group(group) if group == q || group == j => true,
            _ => away.iter().any(|a| a.id() == e.id()),
        })
        .cloned()
        .collect();
    let earlier: HashMap<StreamKind, Vec<Event<C>>> = [q, j]
        .into_iter()
        .map(|group| {
            let kind = StreamKind::Group(group);
            (kind, early.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect())
        })
        .collect();

    let mut stream =
        within("resume", resume(&hub, &reader, Some(LastEventId::Cursor(cursor)), CategorySet::all()))
            .await
            .unwrap_or_else(|e| panic!("rule: {GROUP_RESUME}; the second resume failed: {e}"));
    assert_eq!(
        stream.replay_status(),
        Some(ReplayStatus::Complete),
        "rule: {GROUP_RESUME}; the replay of the second connection (history covers everything)"
    );
    let ours: HashSet<EventId> = log.iter().map(Event::id).collect();
    // One event, then the client goes again.
    let taken = loop {
        match next_item(
            &mut stream,
            &format!("the first event of the second connection (rule: {GROUP_RESUME})"),
        )
        .await
        {
            Some(Ok(event)) if ours.contains(&event.id()) => break event,
            Some(Ok(event)) if event.audience() == Audience::Broadcast => {}
            other => panic!("rule: {GROUP_RESUME}; the second connection yielded {other:?}"),
        }
    };
    let cursor = stream.cursor().expect("a cursor after an event");
    drop(stream);

    let mut stream =
        within("resume", resume(&hub, &reader, Some(LastEventId::Cursor(cursor)), CategorySet::all()))
            .await
            .unwrap_or_else(|e| panic!("rule: {GROUP_RESUME}; the third resume failed: {e}"));
    assert_eq!(
        stream.replay_status(),
        Some(ReplayStatus::Complete),
        "rule: {GROUP_RESUME}; the replay of the third connection (history covers everything)"
    );
    let live: Vec<Event<C>> = vec![
        next(Audience::Group(d)),
        next(Audience::Group(q)),
        next(Audience::Group(k)),
        next(Audience::Group(foreign)),
        next(Audience::Group(j)),
        next(Audience::User(user)),
        next(Audience::Broadcast),
    ];
    for event in &live {
        publish(&hub, event).await;
    }
    log.extend(live.iter().cloned());
    let ours: HashSet<EventId> = log.iter().map(Event::id).collect();
    let mut expected = replay_expected.clone();
    expected.extend(live.iter().filter(|e| reader.reads(e.audience())).cloned());
    let mut got = vec![taken];
    got.extend(
        read_until(
            &mut stream,
            &lasts_of_every_stream(&expected),
            &ours,
            "the third connection",
            GROUP_RESUME,
        )
        .await,
    );
    assert_streams(
        GROUP_RESUME,
        "the second connection's first event and the third connection",
        &got,
        &expected,
        &earlier,
    );
    assert_group_positions(GROUP_RESUME, "the third connection", &got[1..]);
}

/// One simulated client of [`generated_group_workloads_deliver_and_resume_exactly`].
struct Client {
    user: UserId,
    filter: CategorySet<C>,
    groups: Vec<GroupId>,
    /// Per stream read: the index in the log from which every event of it passing the filter is owed.
    owed_from: HashMap<StreamKind, usize>,
    /// The streams the client received an event of since it started reading them.
    received_any: HashSet<StreamKind>,
    /// The cursor to come back with, and the log index at which the connection that wrote it started.
    cursor: Option<(LastEventId, usize)>,
}

/// What a generated group workload publishes to.
struct Audiences {
    users: [UserId; 2],
    groups: [GroupId; 4],
    nobodys: GroupId,
}

async fn publish_random<H: crate::Publisher<C>>(
    hub: &H,
    rng: &mut Lcg,
    to: &Audiences,
    log: &mut Vec<Event<C>>,
    count: u64,
) {
    for _ in 0..count {
        let audience = match rng.below(9) {
            0 => Audience::Broadcast,
            1 | 2 => Audience::User(to.users[rng.below(to.users.len() as u64) as usize]),
            3 => Audience::Group(to.nobodys),
            _ => Audience::Group(to.groups[rng.below(to.groups.len() as u64) as usize]),
        };
        let event = make_event(audience, log.len() + 1);
        publish(hub, &event).await;
        log.push(event);
    }
}

/// Generated group workloads, over fixed seeds: clients (two per user, one
/// with a category filter) read random sets of groups, connect with
/// `resume`, read a random number of events and go with the cursor of the
/// last frame, their groups changing between connections, while events go
/// to the groups, the users, a group nobody reads and the broadcasts.
///
/// Every stream a client reads is delivered exactly once and in order: from
/// the position its cursor holds for it (after the last event of it the
/// client received), or, for a stream without one (a group joined since, a
/// stream the client received nothing of since it started reading it), from
/// the start of the connection the cursor came from; on a first connection,
/// from when it is live. A group dropped is never delivered; joined again,
/// it is read from the previous connection's start. Every replay is
/// complete (history covers everything). Needs a hub that gives
/// [horizons](EventSource::horizon).
///
/// As in [`group_streams_resume_exactly_after_the_cursor`], a stream of
/// which the client has received nothing may start with a contiguous run of
/// its events published just before the expected ones.
pub async fn generated_group_workloads_deliver_and_resume_exactly<F: HubFactory>(factory: &F) {
    for seed in [0x9_0001, 0x9_0002, 0x9_0003] {
        run_group_workload(factory, seed).await;
    }
}

async fn run_group_workload<F: HubFactory>(factory: &F, seed: u64) {
    const CONNECTIONS: usize = 30;
    let hub = factory.create(HubOptions::default()).await;
    let mut rng = Lcg(seed);
    let to = Audiences {
        users: [fresh_user(), fresh_user()],
        groups: [fresh_group(), fresh_group(), fresh_group(), fresh_group()],
        nobodys: fresh_group(),
    };
    let random_groups =
        |rng: &mut Lcg| -> Vec<GroupId> { to.groups.iter().copied().filter(|_| rng.below(2) == 0).collect() };
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client {
            user: to.users[i % to.users.len()],
            filter: if i == 3 {
                CategorySet::from_bits(1 + rng.below((1 << C::ALL.len()) - 1)).expect("bits of categories")
            } else {
                CategorySet::all()
            },
            groups: random_groups(&mut rng),
            owed_from: HashMap::new(),
            received_any: HashSet::new(),
            cursor: None,
        })
        .collect();
    let mut log: Vec<Event<C>> = Vec::new();
    for connection in 0..CONNECTIONS {
        let last = connection + 1 == CONNECTIONS;
        let index = rng.below(clients.len() as u64) as usize;
        let count = rng.below(6);
        publish_random(&hub, &mut rng, &to, &mut log, count).await;
        if rng.below(3) == 0 {
            clients[index].groups = random_groups(&mut rng);
        }
        let client = &mut clients[index];
        let reader = reader_of(client.user, &client.groups);
        let started = log.len();
        let context = format!(
            "seed {seed:#x}, connection {connection}, client {index} reading {:?}",
            reader.groups.as_slice()
        );
        // Where each stream read is owed from: a first connection owes what comes once it is live.
        let kinds: Vec<StreamKind> =
            StreamKind::ALL.into_iter().chain(reader.groups.iter().map(StreamKind::Group)).collect();
        if client.cursor.is_none() {
            client.owed_from.clear();
        }
        client.owed_from.retain(|kind, _| kinds.contains(kind));
        client.received_any.retain(|kind| client.owed_from.contains_key(kind));
        for kind in &kinds {
            let from = client.cursor.as_ref().map_or(started, |(_, start)| *start);
            client.owed_from.entry(*kind).or_insert(from);
        }
        let last_event_id = client.cursor.as_ref().map(|(cursor, _)| cursor.clone());
        let resumed = last_event_id.is_some();
        let mut stream = within("resume", resume(&hub, &reader, last_event_id, client.filter))
            .await
            .unwrap_or_else(|e| panic!("rule: {GROUP_WORKLOAD}; {context}: resume failed: {e}"));
        if resumed {
            assert_eq!(
                stream.replay_status(),
                Some(ReplayStatus::Complete),
                "rule: {GROUP_WORKLOAD}; {context}: the replay status"
            );
        }
        let count = rng.below(8);
        publish_random(&hub, &mut rng, &to, &mut log, count).await;
        let expected: Vec<Event<C>> = log
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                reader.reads(e.audience())
                    && client.filter.contains(e.category())
                    && client.owed_from.get(&StreamKind::of(e.audience())).is_some_and(|from| i >= from)
            })
            .map(|(_, e)| e.clone())
            .collect();
        let mut ours: HashSet<EventId> = log.iter().map(Event::id).collect();
        let mut got = Vec::new();
        if last {
            // The last connection reads everything, up to a marker broadcast published after it all.
            let category = *C::ALL.iter().find(|c| client.filter.contains(**c)).expect("a category");
            let marker = make_event_in(Audience::Broadcast, 0, category);
            publish(&hub, &marker).await;
            let mut until = lasts_of_every_stream(&expected);
            until.push(marker.id());
            ours.insert(marker.id());
            got = read_until(&mut stream, &until, &ours, &context, GROUP_WORKLOAD).await;
            got.retain(|e| e.id() != marker.id());
        } else {
            let take = rng.below(expected.len() as u64 + 1);
            while (got.len() as u64) < take {
                match next_item(&mut stream, &format!("an event ({context}; rule: {GROUP_WORKLOAD})")).await {
                    Some(Ok(event)) if ours.contains(&event.id()) => got.push(event),
                    Some(Ok(event)) if event.audience() == Audience::Broadcast => {}
                    other => panic!("rule: {GROUP_WORKLOAD}; {context}: the stream yielded {other:?}"),
                }
            }
        }
        if let Some(foreign) =
            got.iter().find(|e| !reader.reads(e.audience()) || !client.filter.contains(e.category()))
        {
            panic!("rule: {GROUP_WORKLOAD}; {context}: an event this reader must not receive: {foreign:?}");
        }
        // Each stream: a tolerated run (only where nothing of it was received yet), then what is
        // owed, in order: a prefix of it, all of it on the last connection.
        for kind in kinds_of(got.iter().chain(if last { &expected[..] } else { &[] })) {
            let got_kind = of_stream(&got, kind);
            let owed_kind = of_stream(&expected, kind);
            let mut skip = 0;
            if !client.received_any.contains(&kind) {
                let from = client.owed_from[&kind];
                let before: Vec<EventId> = log[..from]
                    .iter()
                    .filter(|e| {
                        StreamKind::of(e.audience()) == kind
                            && reader.reads(e.audience())
                            && client.filter.contains(e.category())
                    })
                    .map(Event::id)
                    .collect();
                // The run goes on to the owed events; a client that stopped reading saw a prefix of it.
                let run = got_kind.iter().take_while(|e| before.contains(&e.id())).count();
                if let Some(start) = got_kind.first().and_then(|e| before.iter().position(|id| *id == e.id()))
                    && got_kind[..run].iter().map(Event::id).eq(before[start..].iter().copied().take(run))
                    && (run == before.len() - start || run == got_kind.len())
                {
                    skip = run;
                }
            }
            let rest = &got_kind[skip..];
            let owed_now = if last { &owed_kind[..] } else { &owed_kind[..rest.len().min(owed_kind.len())] };
            assert_events(
                GROUP_WORKLOAD,
                &format!("{context}, the {kind} stream {kind:?} (owed {})", id_list(&owed_kind)),
                rest,
                owed_now,
            );
        }
        assert_group_positions(GROUP_WORKLOAD, &context, &got);
        // What the client received moves its streams on.
        for event in &got {
            let kind = StreamKind::of(event.audience());
            let at = log.iter().position(|e| e.id() == event.id()).expect("a published event");
            client.owed_from.insert(kind, at + 1);
            client.received_any.insert(kind);
        }
        if let Some(cursor) = stream.cursor() {
            client.cursor = Some((LastEventId::Cursor(cursor), started));
        }
        drop(stream);
    }
}
