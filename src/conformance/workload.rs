//! The workload model: generated workloads of users, filters, subscriptions and publishes, checked against what a correct hub delivers and replays.

use super::*;

pub(super) const WORKLOAD_LIVE: &str = "a subscription yields exactly its user's events and the broadcasts passing its filter \
                             published while it is subscribed, each audience in publish order, none twice";
pub(super) const WORKLOAD_EARLY: &str = "before the events published while it is subscribed, a subscription may yield only \
                              events published just before it subscribed (still on their way): of each audience, \
                              the newest of those it would receive, in publish order";
pub(super) const REPLAY_NOT_BEFORE: &str =
    "a replay never holds an event published at or before the Last-Event-ID";
pub(super) const REPLAY_STATUS: &str = "replay status: complete when the Last-Event-ID is retained and neither the user's nor the \
                             broadcast history dropped an event published after it; truncated when one of them did, \
                             or when the id is no longer retained; unknown id when it was never published here; \
                             retention disabled without retention";
pub(super) const REPLAY_EVENTS: &str = "a replay holds exactly the retained events of the user and the broadcasts that pass the \
                             filter and were published after the Last-Event-ID (every retained one for an unknown id), \
                             in publish order";

/// The kinds of replay the generated workloads must produce, so the check is known to test each.
pub(super) const REPLAY_CASES: [&str; 6] = [
    "complete",
    "truncated: the id retained, the user's history trimmed past it",
    "truncated: the id retained, the broadcast history trimmed past it",
    "truncated: the id itself trimmed",
    "unknown id",
    "retention disabled",
];

/// A subscription of a generated workload and what it must receive.
pub(super) struct Watcher<S> {
    user: UserId,
    filter: CategorySet<C>,
    /// How many events had been published when it subscribed.
    subscribed_at: usize,
    stream: Option<S>,
    expected: Vec<Event<C>>,
    received: Vec<Event<C>>,
}

/// What a generated workload has published so far.
#[derive(Default)]
pub(super) struct Model {
    published: Vec<Event<C>>,
    ours: HashSet<EventId>,
}

impl Model {
    /// Which published events are still retained, by index: the last `history_len` of each audience.
    fn retained(&self, history_len: usize) -> Vec<bool> {
        let mut kept: HashMap<Audience, usize> = HashMap::new();
        let mut retained = vec![false; self.published.len()];
        for (index, event) in self.published.iter().enumerate().rev() {
            let count = kept.entry(event.audience()).or_default();
            retained[index] = *count < history_len;
            *count += 1;
        }
        retained
    }

    /// The replay a backend must return, and which of [`REPLAY_CASES`] it is.
    fn expected_replay(
        &self,
        retained: Option<&[bool]>,
        user: UserId,
        after: EventId,
        filter: CategorySet<C>,
    ) -> (ReplayStatus, Vec<Event<C>>, usize) {
        let Some(retained) = retained else { return (ReplayStatus::RetentionDisabled, Vec::new(), 5) };
        let wanted = |index: usize| {
            let event = &self.published[index];
            retained[index] && event.audience().includes(user) && filter.contains(event.category())
        };
        let Some(position) = self.published.iter().position(|e| e.id() == after) else {
            let events = (0..self.published.len()).filter(|i| wanted(*i)).map(|i| self.published[i].clone());
            return (ReplayStatus::UnknownId, events.collect(), 4);
        };
        let events =
            (position + 1..self.published.len()).filter(|i| wanted(*i)).map(|i| self.published[i].clone());
        let trimmed_after = |audience: Audience| {
            (position + 1..self.published.len())
                .any(|i| !retained[i] && self.published[i].audience() == audience)
        };
        let (status, case) = if !retained[position] {
            (ReplayStatus::Truncated, 3)
        } else if trimmed_after(Audience::User(user)) {
            (ReplayStatus::Truncated, 1)
        } else if trimmed_after(Audience::Broadcast) {
            (ReplayStatus::Truncated, 2)
        } else {
            (ReplayStatus::Complete, 0)
        };
        (status, events.collect(), case)
    }

    /// Whether a cautious backend may answer truncated where nothing after
    /// `after` was dropped: an audience dropped events, all before the id, and
    /// retains none from before it, so its history alone cannot show that
    /// what it dropped came before the id.
    fn cautious_truncation_allowed(&self, retained: &[bool], user: UserId, after: EventId) -> bool {
        let Some(position) = self.published.iter().position(|e| e.id() == after) else { return false };
        [Audience::User(user), Audience::Broadcast].into_iter().any(|audience| {
            let before = (0..position).filter(|i| self.published[*i].audience() == audience);
            let dropped_some = before.clone().any(|i| !retained[i]);
            let retains_one_before = before.clone().any(|i| retained[i]);
            dropped_some && !retains_one_before && self.published[position].audience() != audience
        })
    }
}

/// Generated-workload property, over several fixed seeds: users subscribe
/// (with random category filters) and drop their subscriptions at random
/// points while events for several users and broadcasts are published into
/// histories bounded by `history_len`.
///
/// Live: every subscription receives exactly its user's events and the
/// broadcasts that pass its filter and were published while it was
/// subscribed, each audience in publish order, none twice.
///
/// Replay, after every id any subscription received, with its filter, and
/// after ids never published here:
///
/// - **Complete**: the id is retained (in the user's or the broadcast
///   history) and neither audience dropped any event published after it.
/// - **Truncated**: some event published after the id may have been dropped:
///   the id is retained but the other audience was trimmed past it, or the id
///   is no longer retained (and so is no newer than what history dropped).
///   A backend that cannot tell which events trimming removed (Redis) may
///   also answer truncated when the other audience dropped events and
///   retains none from before the id: it cannot show that what it dropped
///   came before. Never the reverse: complete where an event after the id
///   was dropped is a silent loss.
/// - **UnknownId**: the id was never published here (a fresh id newer than
///   every event, or a UUID of another version).
/// - **RetentionDisabled**: the hub keeps no history; the replay is empty.
///
/// The replay holds exactly the retained events (of the user and the
/// broadcasts, passing the filter) published after the id, in publish order
/// — for an unknown id, every retained one. A replay never holds an event
/// published at or before the id.
pub async fn generated_workloads_deliver_and_replay_exactly<F: HubFactory>(factory: &F) {
    let mut seen = [0usize; REPLAY_CASES.len()];
    for (seed, retention) in
        [(0x5eed_0001, true), (0x5eed_0002, true), (0x5eed_0003, true), (0x5eed_0004, false)]
    {
        run_generated_workload(factory, seed, retention, &mut seen).await;
    }
    for (case, count) in REPLAY_CASES.iter().zip(seen) {
        assert!(
            count > 0,
            "the suite's own generator produced no replay of this kind: {case} (fix the suite)"
        );
    }
}

pub(super) async fn run_generated_workload<F: HubFactory>(
    factory: &F,
    seed: u64,
    retention: bool,
    seen: &mut [usize],
) {
    const HISTORY: usize = 6;
    const STEPS: usize = 90;
    const MOST_OPEN: usize = 6;
    let hub = factory.create(HubOptions::default().with_history_len(HISTORY).with_retention(retention)).await;
    let mut rng = Lcg(seed);
    let users = [fresh_user(), fresh_user(), fresh_user()];
    let mut model = Model::default();
    let mut watchers: Vec<Watcher<<F::Hub as EventSource<C>>::Subscription>> = Vec::new();
    let mut n = 0;
    for _ in 0..STEPS {
        let open: Vec<usize> = (0..watchers.len()).filter(|i| watchers[*i].stream.is_some()).collect();
        match rng.below(10) {
            0 | 1 if open.len() < MOST_OPEN => {
                let user = users[rng.below(users.len() as u64) as usize];
                let filter = if rng.below(3) == 0 {
                    CategorySet::all()
                } else {
                    CategorySet::from_bits(1 + rng.below((1 << C::ALL.len()) - 1))
                        .expect("bits of categories")
                };
                let subscribed_at = model.published.len();
                let stream = Some(subscribe(&hub, user, filter).await);
                watchers.push(Watcher {
                    user,
                    filter,
                    subscribed_at,
                    stream,
                    expected: Vec::new(),
                    received: Vec::new(),
                });
            }
            2 if !open.is_empty() => {
                let index = open[rng.below(open.len() as u64) as usize];
                check_watcher(&hub, &mut model, &mut watchers, index, &mut n, seed).await;
                watchers[index].stream = None;
            }
            _ => {
                let audience = match rng.below(4) {
                    0 => Audience::Broadcast,
                    _ => Audience::User(users[rng.below(users.len() as u64) as usize]),
                };
                let category = C::ALL[rng.below(C::ALL.len() as u64) as usize];
                n += 1;
                publish_in_workload(&hub, &mut model, &mut watchers, make_event_in(audience, n, category))
                    .await;
            }
        }
    }
    for index in 0..watchers.len() {
        if watchers[index].stream.is_some() {
            check_watcher(&hub, &mut model, &mut watchers, index, &mut n, seed).await;
            watchers[index].stream = None;
        }
    }

    let retained_flags = retention.then(|| model.retained(HISTORY));
    let retained = retained_flags.as_deref();
    let mut queries: Vec<(UserId, CategorySet<C>, EventId)> = Vec::new();
    let mut asked = HashSet::new();
    for watcher in &watchers {
        for event in &watcher.received {
            if asked.insert((watcher.user, watcher.filter.bits(), event.id())) {
                queries.push((watcher.user, watcher.filter, event.id()));
            }
        }
    }
    let foreign = EventId::from_uuid(uuid::Uuid::from_u128(0x8d6e_1f4a_2b3c_4d5e_9f60_7a8b_9c0d_1e2f));
    // A UUIDv7 a minute newer than every event: never published, and newer
    // than anything history dropped even at millisecond precision.
    let newest_ms = model.published.iter().filter_map(|e| e.id().timestamp_millis()).max().unwrap_or(0);
    let never_published = EventId::from_uuid(
        uuid::Builder::from_unix_timestamp_millis(newest_ms + 60_000, &[0x5e; 10]).into_uuid(),
    );
    for user in users {
        queries.push((user, CategorySet::all(), never_published));
        queries.push((user, CategorySet::only(C::Ai).with(C::Import), foreign));
    }
    for (user, filter, after) in queries {
        let replay = missed(&hub, user, after, filter).await;
        let (status, expected, case) = model.expected_replay(retained, user, after, filter);
        seen[case] += 1;
        let context =
            format!("seed {seed:#x}, user {user}, filter {filter}, after {after} ({})", REPLAY_CASES[case]);
        if let Some(position) = model.published.iter().position(|e| e.id() == after) {
            let not_after: HashSet<EventId> = model.published[..=position].iter().map(Event::id).collect();
            if let Some(early) = replay.events.iter().find(|e| not_after.contains(&e.id())) {
                panic!("rule: {REPLAY_NOT_BEFORE}; {context}: the replay holds {}", describe(early));
            }
        }
        let cautious = status == ReplayStatus::Complete
            && replay.status == ReplayStatus::Truncated
            && retained.is_some_and(|retained| model.cautious_truncation_allowed(retained, user, after));
        if !cautious {
            assert_status(REPLAY_STATUS, &context, &replay, status);
        }
        assert_events(REPLAY_EVENTS, &context, &only_ours(&replay.events, &model.ours), &expected);
    }
}

/// Publishes `event` and adds it to what every open subscription it reaches must receive.
pub(super) async fn publish_in_workload<H: Publisher<C>, S>(
    hub: &H,
    model: &mut Model,
    watchers: &mut [Watcher<S>],
    event: Event<C>,
) {
    publish(hub, &event).await;
    for watcher in watchers.iter_mut().filter(|w| w.stream.is_some()) {
        if event.audience().includes(watcher.user) && watcher.filter.contains(event.category()) {
            watcher.expected.push(event.clone());
        }
    }
    model.ours.insert(event.id());
    model.published.push(event);
}

/// Publishes a marker the subscription `index` passes, reads up to it, and
/// checks everything the subscription received so far.
pub(super) async fn check_watcher<H, S>(
    hub: &H,
    model: &mut Model,
    watchers: &mut [Watcher<S>],
    index: usize,
    n: &mut usize,
    seed: u64,
) where
    H: Publisher<C>,
    S: futures_lite::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    let (user, filter) = (watchers[index].user, watchers[index].filter);
    let category = filter.iter().next().expect("a filter is never empty");
    *n += 1;
    let marker = make_event_in(Audience::User(user), *n, category);
    publish_in_workload(hub, model, watchers, marker.clone()).await;
    let watcher = &mut watchers[index];
    let stream = watcher.stream.as_mut().expect("an open subscription");
    let who = format!("subscription #{index} (seed {seed:#x}, filter {filter})");
    // Up to the newest expected event of each stream not received yet (the marker, and the
    // newest broadcast it passes): each stream comes in order, the two in any interleaving.
    let received: HashSet<EventId> = watcher.received.iter().map(Event::id).collect();
    let pending: Vec<Event<C>> =
        watcher.expected.iter().filter(|e| !received.contains(&e.id())).cloned().collect();
    let got = read_until(stream, &lasts(&pending), &model.ours, &who, WORKLOAD_LIVE).await;
    watcher.received.extend(got);
    // Each audience in publish order; the contract orders no user event against a broadcast, so
    // neither does it order an early event of one audience against a live one of the other.
    // Events published before it subscribed that were still on their way may come first in each
    // audience: the newest ones of those it would receive, in publish order.
    for audience in [Audience::User(user), Audience::Broadcast] {
        let of = |events: &[Event<C>]| {
            events.iter().filter(|e| e.audience() == audience).cloned().collect::<Vec<_>>()
        };
        let received = of(&watcher.received);
        let before: Vec<Event<C>> = of(&model.published[..watcher.subscribed_at])
            .into_iter()
            .filter(|e| filter.contains(e.category()))
            .collect();
        let early = received.iter().take_while(|e| before.iter().any(|b| b.id() == e.id())).count();
        assert_events(
            WORKLOAD_EARLY,
            &format!("{who}, {audience:?} events published before it subscribed"),
            &received[..early],
            &before[before.len() - early.min(before.len())..],
        );
        assert_events(
            WORKLOAD_LIVE,
            &format!("{who}, {audience:?} events"),
            &received[early..],
            &of(&watcher.expected),
        );
    }
}
