//! Conformance rules of live delivery: live when subscribed, own events only, broadcasts to all, category filters, data of every JSON kind.

use super::*;

/// An event published right after `subscribe` returns reaches the subscription.
pub async fn subscription_is_live_when_subscribe_returns<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    for round in 0..20 {
        let user = fresh_user();
        let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
        let event = make_event(Audience::User(user), round);
        publish(&hub, &event).await;
        let ours = HashSet::from([event.id()]);
        let received =
            read_until(&mut subscription, &[event.id()], &ours, "a just-made subscription", LIVE).await;
        assert_events(LIVE, &format!("round {round}"), &received, &[event]);
    }
}

/// A subscription yields its user's events and never another user's; replay
/// keeps users apart too.
pub async fn subscriber_receives_own_events_only<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut alice_subscription = subscribe(&hub, alice, CategorySet::all()).await;
    let mut bob_subscription = subscribe(&hub, bob, CategorySet::all()).await;

    let (mut for_alice, mut for_bob) = (Vec::new(), Vec::new());
    for n in 0..20 {
        let (a, b) = (make_event(Audience::User(alice), n), make_event(Audience::User(bob), n));
        publish(&hub, &a).await;
        publish(&hub, &b).await;
        for_alice.push(a);
        for_bob.push(b);
    }
    // Each user's last event comes after every event of the other: anything
    // leaked would arrive before it.
    let bob_mark = make_event(Audience::User(bob), 20);
    let alice_last = make_event(Audience::User(alice), 21);
    let bob_last = make_event(Audience::User(bob), 22);
    for event in [&bob_mark, &alice_last, &bob_last] {
        publish(&hub, event).await;
    }
    for_bob.push(bob_mark);
    for_alice.push(alice_last.clone());
    for_bob.push(bob_last.clone());

    let ours: HashSet<EventId> = for_alice.iter().chain(&for_bob).map(Event::id).collect();
    let alice_got = read_until(&mut alice_subscription, &[alice_last.id()], &ours, "alice", OWN_ONLY).await;
    let bob_got = read_until(&mut bob_subscription, &[bob_last.id()], &ours, "bob", OWN_ONLY).await;
    assert_events(OWN_ONLY, "alice's subscription", &alice_got, &for_alice);
    assert_events(OWN_ONLY, "bob's subscription", &bob_got, &for_bob);

    let replay = missed(&hub, alice, for_alice[0].id(), CategorySet::all()).await;
    assert_status(OWN_ONLY, "alice's replay", &replay, ReplayStatus::Complete);
    assert_events(OWN_ONLY, "alice's replay", &only_ours(&replay.events, &ours), &for_alice[1..]);
    if let Some(foreign) = replay.events.iter().find(|e| !e.audience().includes(alice)) {
        panic!("rule: {OWN_ONLY}; alice's replay holds another user's event: {foreign:?}");
    }
}

/// Every subscription of every user receives every broadcast, in publish order.
pub async fn broadcasts_reach_every_subscriber<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let users = [fresh_user(), fresh_user(), fresh_user()];
    let mut subscriptions = Vec::new();
    for user in users {
        for _ in 0..2 {
            subscriptions.push((user, subscribe(&hub, user, CategorySet::all()).await));
        }
    }
    let own = make_event(Audience::User(users[0]), 0);
    publish(&hub, &own).await;
    let broadcasts: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::Broadcast, n)).collect();
    for event in &broadcasts {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = broadcasts.iter().chain([&own]).map(Event::id).collect();
    for (index, (user, subscription)) in subscriptions.iter_mut().enumerate() {
        let mut expected = broadcasts.clone();
        if *user == users[0] {
            expected.insert(0, own.clone());
        }
        let received =
            read_until(subscription, &lasts(&expected), &ours, "a broadcast subscriber", BROADCASTS).await;
        assert_each_stream(BROADCASTS, &format!("subscription #{index}"), &received, &expected);
    }
}

/// A category filter lets through only its categories, for own events and
/// broadcasts, live and replayed.
pub async fn category_filter_applies_to_live_and_replayed_events<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let filter = CategorySet::only(C::Ai).with(C::Security);
    let mut filtered = subscribe(&hub, user, filter).await;
    let mut unfiltered = subscribe(&hub, user, CategorySet::all()).await;

    let first = make_event_in(Audience::User(user), 0, C::Security);
    publish(&hub, &first).await;
    let mut published = vec![first.clone()];
    for (n, category) in C::ALL.iter().enumerate() {
        for audience in [Audience::User(user), Audience::Broadcast] {
            let event = make_event_in(audience, n + 1, *category);
            publish(&hub, &event).await;
            published.push(event);
        }
    }
    let last = make_event_in(Audience::User(user), 99, C::Ai);
    publish(&hub, &last).await;
    published.push(last.clone());

    let ours: HashSet<EventId> = published.iter().map(Event::id).collect();
    let wanted: Vec<Event<C>> = published.iter().filter(|e| filter.contains(e.category())).cloned().collect();
    let got = read_until(&mut filtered, &lasts(&wanted), &ours, "a filtered subscriber", FILTER).await;
    assert_each_stream(FILTER, "the filtered subscription", &got, &wanted);
    let got =
        read_until(&mut unfiltered, &lasts(&published), &ours, "an unfiltered subscriber", FILTER).await;
    assert_each_stream(FILTER, "the unfiltered subscription", &got, &published);

    let replay = missed(&hub, user, first.id(), filter).await;
    assert_status(FILTER, "the filtered replay", &replay, ReplayStatus::Complete);
    if let Some(wrong) = replay.events.iter().find(|e| !filter.contains(e.category())) {
        panic!("rule: {FILTER}; the filtered replay holds an event of another category: {wrong:?}");
    }
    assert_events(FILTER, "the filtered replay", &only_ours(&replay.events, &ours), &wanted[1..]);
}

pub(super) const DATA: &str = "event data is JSON text of any kind and is delivered live and replayed unchanged: data byte for \
                    byte, with the same id, audience, event type, category and occurred_at (to the microsecond)";

/// The data of the data check: every kind of JSON text, each a byte sequence a backend must keep as is.
pub(super) fn json_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        r#"{}"#,
        r#"[]"#,
        r#"{"n":1,"nested":{"list":[1,2,{"deep":[null,true,false]}],"empty":{}}}"#,
        r#"[1,"two",3.5,null,true,false,{"k":"v"},[]]"#,
        r#""plain string""#,
        r#""escapes: \" \\ \/ \b \f \n \r \t \u0000 \u00e9 \ud83d\ude00""#,
        r#""unicode as is: héllo wörld ✓ 😀 中文""#,
        r#""line one\nline two\r\nline three""#,
        r#""data: forged\n\nid: 1""#,
        "0",
        "-0",
        "42",
        "-1.5e-7",
        "1E+300",
        "12345678901234567890123456789",
        "3.14159265358979323846264338327950288",
        "true",
        "false",
        "null",
        "{ \"spaced\" : [ 1 , 2 ] , \"tab\":\t3 }",
        "{\n  \"pretty\": [\n    1,\n    2\n  ],\n  \"crlf\": true\r\n}",
        r#"{"a":1,"a":2}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Nested 32 deep.
    texts.push(format!("{}1{}", "[".repeat(32), "]".repeat(32)));
    // About 64 KiB: one long string with escapes and non-ASCII characters spread through it...
    let mut long = String::from("\"");
    while long.len() < 64 * 1024 {
        long.push_str("abcdefghij \\\"quoted\\\" ü 😀 \\n ");
    }
    long.push('"');
    texts.push(long);
    // ...and one large object.
    let mut object = String::from("{");
    let mut n = 0;
    while object.len() < 64 * 1024 {
        if n > 0 {
            object.push(',');
        }
        let _ = write!(object, "\"key{n}\":[{n},\"value {n}\",{{\"x\":{}}}]", n % 7 == 0);
        n += 1;
    }
    object.push('}');
    texts.push(object);
    texts
}

/// Data rule: event data is JSON text, checked where the event is made, and a
/// backend accepts every event that could be made. Every kind of JSON value —
/// objects, arrays, strings (escapes, `\n`, non-ASCII), numbers (negative,
/// exponents, beyond 64 bits), `true`, `false`, `null`, deep nesting, inner
/// whitespace and line breaks, ~64 KiB texts — is accepted by `publish`,
/// delivered live and replayed with its data byte for byte equal and the same
/// id, audience, event type, category and `occurred_at`. `occurred_at` is
/// compared to the microsecond (truncated): the precision
/// [`Event::occurred_at`] promises; the Redis backend keeps nanoseconds.
pub async fn event_data_of_every_json_kind_is_delivered_and_replayed_unchanged<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let user = fresh_user();
    let mut subscription = subscribe(&hub, user, CategorySet::all()).await;
    let first = make_event(Audience::User(user), 0);
    publish(&hub, &first).await;
    let times: [DateTime<Utc>; 4] = [
        Utc::now(),
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(123_456_789),
        Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 8).unwrap() + chrono::Duration::microseconds(999_999),
    ];
    let event_types = ["data.kind", "a", "ünïcode type: with spaces & punctuation!", "portfolio.updated"];
    let published: Vec<Event<C>> = json_texts()
        .into_iter()
        .enumerate()
        .map(|(n, data)| {
            let audience = if n % 3 == 2 { Audience::Broadcast } else { Audience::User(user) };
            Event::from_parts(
                EventId::new(),
                audience,
                event_types[n % event_types.len()],
                C::ALL[n % C::ALL.len()],
                data,
                times[n % times.len()],
            )
            .expect("valid JSON data and a valid event type")
        })
        .collect();
    for event in &published {
        if let Err(error) = within("publish", hub.publish(event.clone())).await {
            panic!("rule: {DATA}; publish refused {}: {error}", describe(event));
        }
    }
    let ours: HashSet<EventId> = published.iter().chain([&first]).map(Event::id).collect();
    let mut expected_live = vec![first.clone()];
    expected_live.extend(published.iter().cloned());
    let got = read_until(
        &mut subscription,
        &lasts(&expected_live),
        &ours,
        "a subscriber of every kind of data",
        DATA,
    )
    .await;
    assert_each_stream(DATA, "delivered live", &got, &expected_live);
    let replay = missed(&hub, user, first.id(), CategorySet::all()).await;
    assert_status(DATA, "replayed", &replay, ReplayStatus::Complete);
    assert_events(DATA, "replayed", &only_ours(&replay.events, &ours), &published);
}
