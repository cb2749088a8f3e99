//! Conformance rules of who may hold streams: the caps on open subscriptions, and disconnecting a user.

use super::*;
use crate::LimitScope;

const CAPS: &str = "subscribe fails with Error::TooManySubscriptions (scope User at the per-user cap, Process at the \
                    per-process cap) before anything is registered, and a dropped or revoked subscription frees its \
                    place at once";

const DISCONNECT: &str = "disconnect(user) ends each of the user's open subscriptions with Err(Error::Revoked), then \
                          None, and nothing more; other users' subscriptions carry on untouched; the user may \
                          subscribe again";

/// `subscribe`'s result, which must be the cap error of `scope` at `limit`.
fn expect_capped<S>(result: Result<S, Error>, scope: LimitScope, limit: usize, context: &str) {
    match result {
        Err(Error::TooManySubscriptions { scope: got, limit: at }) if got == scope && at == limit => {}
        Err(error) => panic!("rule: {CAPS}; {context}: expected the {scope} cap of {limit}, got {error}"),
        Ok(_) => {
            panic!("rule: {CAPS}; {context}: expected the {scope} cap of {limit}, the subscribe succeeded")
        }
    }
}

/// Caps: with 3 per user and 5 in all, a user's fourth subscribe and the
/// hub's sixth fail with the cap's error and register nothing; a dropped
/// subscription, or a disconnected user's, frees its place for the very next
/// subscribe.
pub async fn open_subscriptions_are_capped_per_user_and_per_process_exactly<F: HubFactory>(factory: &F) {
    let limits = SubscriptionLimits::new().per_user(3).per_process(5);
    let hub = factory.create(HubOptions::default().with_subscription_limits(limits)).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (alice, bob, carol) = (fresh_user(), fresh_user(), fresh_user());
    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(subscribe(&hub, alice, CategorySet::all()).await);
    }
    let fourth = within("subscribe", hub.subscribe(alice, CategorySet::all())).await;
    expect_capped(fourth, LimitScope::User, 3, "alice's fourth subscription");
    let mut bobs =
        vec![subscribe(&hub, bob, CategorySet::all()).await, subscribe(&hub, bob, CategorySet::all()).await];
    let sixth = within("subscribe", hub.subscribe(carol, CategorySet::all())).await;
    expect_capped(sixth, LimitScope::Process, 5, "the sixth subscription");
    expect_subscriptions(factory, &hub, baseline + 5, "after two refused subscribes").await;

    // A dropped subscription's place is free for the next subscribe, at once.
    drop(alices.pop());
    let carols = subscribe(&hub, carol, CategorySet::all()).await;
    let again = within("subscribe", hub.subscribe(alice, CategorySet::all())).await;
    expect_capped(again, LimitScope::Process, 5, "a subscribe after the freed place was taken");

    // A disconnected user's places are free once its streams have ended.
    within("disconnect", hub.disconnect(bob))
        .await
        .unwrap_or_else(|error| panic!("disconnect failed: {error}"));
    for (n, subscription) in bobs.iter_mut().enumerate() {
        match next_item(subscription, "bob's subscription to end").await {
            Some(Err(Error::Revoked)) => {}
            other => {
                panic!("rule: {DISCONNECT}; bob's subscription {n}: expected Err(Revoked), got {other:?}")
            }
        }
    }
    let alice_again = subscribe(&hub, alice, CategorySet::all()).await;
    let bob_again = subscribe(&hub, bob, CategorySet::all()).await;
    expect_subscriptions(factory, &hub, baseline + 5, "after the disconnect and two new subscribes").await;
    drop((alices, bobs, carols, alice_again, bob_again));
    expect_subscriptions(factory, &hub, baseline, "after dropping every subscription").await;
}

/// Disconnect: both of alice's subscriptions (one with an event queued and
/// unread) yield `Err(Revoked)` next, then `None`; bob's goes on; alice's
/// next subscription receives her events.
pub async fn disconnect_ends_every_stream_of_the_user_and_no_other<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;
    let baseline = factory.active_subscriptions(&hub).await;
    let (alice, bob) = (fresh_user(), fresh_user());
    let mut alices =
        [subscribe(&hub, alice, CategorySet::all()).await, subscribe(&hub, alice, CategorySet::all()).await];
    let mut bobs = subscribe(&hub, bob, CategorySet::all()).await;
    let first = make_event(Audience::User(alice), 0);
    publish(&hub, &first).await;
    let ours = HashSet::from([first.id()]);
    for subscription in &mut alices {
        let got = read_until(subscription, &[first.id()], &ours, "alice", DISCONNECT).await;
        assert_events(DISCONNECT, "alice before the disconnect", &got, std::slice::from_ref(&first));
    }
    // Queued for alice and never read: the disconnect drops it.
    publish(&hub, &make_event(Audience::User(alice), 1)).await;

    within("disconnect", hub.disconnect(alice))
        .await
        .unwrap_or_else(|error| panic!("disconnect failed: {error}"));
    for (n, subscription) in alices.iter_mut().enumerate() {
        let who = format!("alice's subscription {n}");
        match next_item(subscription, &format!("{who} to end")).await {
            Some(Err(Error::Revoked)) => {}
            other => panic!("rule: {DISCONNECT}; {who}: expected Err(Revoked) next, got {other:?}"),
        }
        match next_item(subscription, &format!("{who} to finish")).await {
            None => {}
            other => panic!("rule: {DISCONNECT}; {who}: expected the end after Err(Revoked), got {other:?}"),
        }
    }
    expect_subscriptions(factory, &hub, baseline + 1, "after disconnecting alice").await;

    // Bob's subscription carries on, and alice may subscribe again.
    let mut alice_again = subscribe(&hub, alice, CategorySet::all()).await;
    let (to_bob, to_alice) = (make_event(Audience::User(bob), 2), make_event(Audience::User(alice), 3));
    publish(&hub, &to_bob).await;
    publish(&hub, &to_alice).await;
    let got = read_until(&mut bobs, &[to_bob.id()], &HashSet::from([to_bob.id()]), "bob", DISCONNECT).await;
    assert_events(DISCONNECT, "bob after alice's disconnect", &got, std::slice::from_ref(&to_bob));
    let got = read_until(
        &mut alice_again,
        &[to_alice.id()],
        &HashSet::from([to_alice.id()]),
        "alice again",
        DISCONNECT,
    )
    .await;
    assert_events(DISCONNECT, "alice's new subscription", &got, std::slice::from_ref(&to_alice));
}
