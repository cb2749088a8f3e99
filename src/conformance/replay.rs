//! Conformance rules of replay after an event id and of `resume` over it: complete, merged, truncated, unknown, without retention, the gap signal.

use super::*;

/// Replay after a retained id returns everything after it, in publish order, as complete.
pub async fn replay_after_retained_id_is_complete<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..10).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    for after in [0, 4, 9] {
        let replay = missed(&hub, user, published[after].id(), CategorySet::all()).await;
        let context = format!("replay after event #{after}");
        assert_status(REPLAY_COMPLETE, &context, &replay, ReplayStatus::Complete);
        assert_events(REPLAY_COMPLETE, &context, &only_ours(&replay.events, &ours), &published[after + 1..]);
    }
}

/// Replay merges the user's events and the broadcasts in publish order, from
/// a user event's id and from a broadcast's id alike.
pub async fn replay_merges_broadcasts_in_publish_order<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (user, other) = (fresh_user(), fresh_user());
    let plan = [
        Audience::User(user),
        Audience::Broadcast,
        Audience::User(other),
        Audience::User(user),
        Audience::User(user),
        Audience::Broadcast,
        Audience::User(other),
        Audience::Broadcast,
        Audience::User(user),
        Audience::Broadcast,
    ];
    let published: Vec<Event<C>> = plan.iter().enumerate().map(|(n, a)| make_event(*a, n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let visible: Vec<Event<C>> = published.iter().filter(|e| e.audience().includes(user)).cloned().collect();
    for (position, after) in visible.iter().enumerate() {
        let replay = missed(&hub, user, after.id(), CategorySet::all()).await;
        let kind = if after.audience() == Audience::Broadcast { "a broadcast" } else { "an own event" };
        let context = format!("replay after {kind} (#{position})");
        assert_status(REPLAY_MERGE, &context, &replay, ReplayStatus::Complete);
        assert_events(REPLAY_MERGE, &context, &only_ours(&replay.events, &ours), &visible[position + 1..]);
    }
}

/// Replay after an id that history no longer holds reports truncated, with
/// exactly the retained events published after that id; a retained id still
/// replays completely, unless the other audience was trimmed past it: then it
/// is truncated too. The same for the user's events and for broadcasts.
pub async fn replay_after_trimmed_id_reports_truncated<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..4 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let mut ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let replay = missed(&hub, user, published[1].id(), CategorySet::all()).await;
    let context = "replay after a trimmed own event";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &published[published.len() - KEPT..],
    );

    // A retained id still replays completely.
    let retained = &published[published.len() - 3];
    let replay = missed(&hub, user, retained.id(), CategorySet::all()).await;
    let context = "replay after a retained own event";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Complete);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &published[published.len() - 2..],
    );

    // Broadcasts are trimmed and reported the same way. The user's retained
    // events were all published before the trimmed broadcast: none belongs in
    // its replay.
    let anchor = make_event(Audience::User(user), 4 * KEPT);
    publish(&hub, &anchor).await;
    let broadcasts: Vec<Event<C>> = (0..3 * KEPT).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in &broadcasts {
        publish(&hub, event).await;
    }
    ours.insert(anchor.id());
    ours.extend(broadcasts.iter().map(Event::id));
    // The user's newest event is retained, but broadcasts published after it were trimmed.
    let replay = missed(&hub, user, anchor.id(), CategorySet::all()).await;
    let context = "replay after a retained own event, with broadcasts trimmed past it";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &broadcasts[broadcasts.len() - KEPT..],
    );
    let replay = missed(&hub, user, broadcasts[0].id(), CategorySet::all()).await;
    let context = "replay after a trimmed broadcast";
    assert_status(REPLAY_TRUNCATED, context, &replay, ReplayStatus::Truncated);
    assert_events(
        REPLAY_TRUNCATED,
        context,
        &only_ours(&replay.events, &ours),
        &broadcasts[broadcasts.len() - KEPT..],
    );
}

/// Replay after an id the hub never published reports unknown id, with every retained event.
pub async fn replay_after_unknown_id_reports_unknown_id<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..3).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let never_published = EventId::new();
    // A foreign id of another UUID version (v4 layout).
    let foreign = EventId::from_uuid(uuid::Uuid::from_u128(0x8d6e_1f4a_2b3c_4d5e_9f60_7a8b_9c0d_1e2f));
    for unknown in [never_published, foreign] {
        let replay = missed(&hub, user, unknown, CategorySet::all()).await;
        let context = format!("replay after {unknown}");
        assert_status(REPLAY_UNKNOWN, &context, &replay, ReplayStatus::UnknownId);
        assert_events(REPLAY_UNKNOWN, &context, &only_ours(&replay.events, &ours), &published);
    }
}

/// Without retention, replay reports it and returns nothing; live delivery works.
pub async fn replay_without_retention_reports_retention_disabled<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default().with_retention(false)).await;
    let user = fresh_user();
    let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
    let published: Vec<Event<C>> = (0..3).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let got = read_until(
        &mut subscription,
        &[published[2].id()],
        &ours,
        "a subscriber without retention",
        REPLAY_DISABLED,
    )
    .await;
    assert_events(REPLAY_DISABLED, "live delivery without retention", &got, &published);
    let replay = missed(&hub, user, published[0].id(), CategorySet::all()).await;
    assert_status(REPLAY_DISABLED, "replay without retention", &replay, ReplayStatus::RetentionDisabled);
    assert_events(REPLAY_DISABLED, "replay without retention", &replay.events, &[]);
}

/// `resume` without a Last-Event-ID replays nothing and yields live events.
pub async fn resume_without_last_event_id_is_live_only<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let before = make_event(Audience::User(user), 0);
    publish(&hub, &before).await;
    let mut resumed = within("resume", resume(&hub, user, None, CategorySet::all())).await.expect("resume");
    assert_eq!(resumed.replay_status(), None, "rule: {RESUME_LIVE}; a first connection has no replay status");
    let after = make_event(Audience::User(user), 1);
    publish(&hub, &after).await;
    let ours = HashSet::from([before.id(), after.id()]);
    let got = read_until(&mut resumed, &[after.id()], &ours, "a first connection", RESUME_LIVE).await;
    assert_events(RESUME_LIVE, "a first connection", &got, &[after]);
}

/// When history does not cover the gap, `resume` yields `Error::Gap` first,
/// then what replay had, then live events.
pub async fn resume_after_truncated_history_signals_gap_first<F: HubFactory>(factory: &F) {
    const KEPT: usize = 5;
    let hub = factory.create(HubOptions::default().with_history_len(KEPT)).await;
    let user = fresh_user();
    let published: Vec<Event<C>> = (0..3 * KEPT).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &published {
        publish(&hub, event).await;
    }
    let last_seen = published[0].id();
    let mut resumed = within("resume", resume(&hub, user, Some(last_seen.into()), CategorySet::all()))
        .await
        .expect("resume");
    assert_eq!(
        resumed.replay_status(),
        Some(ReplayStatus::Truncated),
        "rule: {RESUME_GAP}; the replay status after a trimmed id"
    );
    match next_item(&mut resumed, "the gap signal").await {
        Some(Err(Error::Gap { last_delivered, .. })) => assert_eq!(
            last_delivered,
            Some(last_seen),
            "rule: {RESUME_GAP}; the gap names the client's Last-Event-ID"
        ),
        other => panic!("rule: {RESUME_GAP}; the first item is {other:?}, expected Error::Gap"),
    }
    let live = make_event(Audience::User(user), 100);
    publish(&hub, &live).await;
    let ours: HashSet<EventId> = published.iter().chain([&live]).map(Event::id).collect();
    let got = read_until(&mut resumed, &[live.id()], &ours, "a resumed subscriber", RESUME_GAP).await;
    let mut expected = published[published.len() - KEPT..].to_vec();
    expected.push(live);
    assert_events(RESUME_GAP, "after the gap: the retained events, then live ones", &got, &expected);
}
