//! The `serde` feature: the core types round-trip through JSON, in the shapes the README documents, and bad records are refused.

use ssehub::fixture::ExampleCategory as C;
use ssehub::{Audience, CategorySet, Event, EventId, ReplayStatus, UserId};

#[test]
fn ids_audiences_and_statuses_have_their_plain_json_forms() {
    let id: EventId = "0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f".parse().unwrap();
    let user = UserId::from_u64(42);
    assert_eq!(serde_json::to_string(&id).unwrap(), "\"0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f\"");
    assert_eq!(serde_json::to_string(&user).unwrap(), "\"00000000-0000-0000-0000-00000000002a\"");
    assert_eq!(serde_json::to_string(&Audience::Broadcast).unwrap(), "\"broadcast\"");
    assert_eq!(
        serde_json::to_string(&Audience::User(user)).unwrap(),
        "{\"user\":\"00000000-0000-0000-0000-00000000002a\"}"
    );
    assert_eq!(serde_json::to_string(&ReplayStatus::UnknownId).unwrap(), "\"unknown_id\"");
    for value in [
        serde_json::to_value(id).unwrap(),
        serde_json::to_value(user).unwrap(),
        serde_json::to_value(Audience::User(user)).unwrap(),
    ] {
        let text = value.to_string();
        assert_eq!(
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&text).unwrap()).unwrap(),
            text
        );
    }
    assert_eq!(serde_json::from_str::<EventId>("\"0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f\"").unwrap(), id);
    assert_eq!(
        serde_json::from_str::<Audience>("{\"user\":\"00000000-0000-0000-0000-00000000002a\"}").unwrap(),
        Audience::User(user)
    );
    assert_eq!(serde_json::from_str::<ReplayStatus>("\"truncated\"").unwrap(), ReplayStatus::Truncated);
}

#[test]
fn a_category_set_is_its_list_of_names_and_unknown_names_are_refused() {
    let set = CategorySet::only(C::Ai).with(C::Security);
    assert_eq!(serde_json::to_string(&set).unwrap(), "[\"ai\",\"security\"]");
    assert_eq!(serde_json::from_str::<CategorySet<C>>("[\"security\",\"ai\"]").unwrap(), set);
    let error = serde_json::from_str::<CategorySet<C>>("[\"ai\",\"nope\"]").unwrap_err();
    assert!(error.to_string().contains("invalid category 'nope'"), "{error}");
}

#[test]
fn an_event_round_trips_whole_and_a_bad_record_is_refused() {
    let user = UserId::from_name("alice");
    let event = Event::new(Audience::User(user), "ai.done", C::Ai, "{\"score\": [1, 2.5]}").unwrap();
    let text = serde_json::to_string(&event).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["id"], event.id().to_string());
    assert_eq!(record["category"], "ai");
    assert_eq!(record["event_type"], "ai.done");
    assert_eq!(record["data"], "{\"score\": [1, 2.5]}", "data travels as the JSON text it is");
    let back: Event<C> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, event);
    assert_eq!(back.data(), event.data());
    assert_eq!(back.occurred_at(), event.occurred_at());

    let mut bad = record.clone();
    bad["category"] = "nope".into();
    let error = serde_json::from_value::<Event<C>>(bad).unwrap_err();
    assert!(error.to_string().contains("unknown category 'nope'"), "{error}");
    let mut bad = record;
    bad["data"] = "not json".into();
    assert!(serde_json::from_value::<Event<C>>(bad).is_err(), "data that is not JSON text is refused");
}
