//! Failure reports of the conformance checks: what differed between the events a check got and the ones it expected, field by field.

use super::*;

pub(super) fn id_list_of<'a>(ids: impl IntoIterator<Item = &'a EventId>) -> String {
    let ids: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
    format!("[{}]", ids.join(", "))
}

/// Panics naming `rule` unless `got` and `expected` hold the same events
/// stream by stream, each in order: the order a subscription promises.
pub(super) fn assert_each_stream(rule: &str, context: &str, got: &[Event<C>], expected: &[Event<C>]) {
    for kind in StreamKind::ALL {
        let of_kind = |events: &[Event<C>]| -> Vec<Event<C>> {
            events.iter().filter(|e| StreamKind::of(e.audience()) == kind).cloned().collect()
        };
        assert_events(rule, &format!("{context}, the {kind} stream"), &of_kind(got), &of_kind(expected));
    }
}

/// Only the events this check published, in the order given.
pub(super) fn only_ours(events: &[Event<C>], ours: &HashSet<EventId>) -> Vec<Event<C>> {
    events.iter().filter(|e| ours.contains(&e.id())).cloned().collect()
}

pub(super) fn id_list<'a>(events: impl IntoIterator<Item = &'a Event<C>>) -> String {
    let ids: Vec<String> = events.into_iter().map(|e| e.id().to_string()).collect();
    format!("[{}]", ids.join(", "))
}

pub(super) fn describe(event: &Event<C>) -> String {
    let audience = match event.audience() {
        Audience::User(user) => format!("user {user}"),
        Audience::Broadcast => "broadcast".to_string(),
        Audience::Group(group) => format!("group {group}"),
    };
    format!(
        "{} ({audience}, {}, {}, data {})",
        event.id(),
        event.event_type(),
        event.category().name(),
        short(event.data())
    )
}

/// Long data shortened for a message: its length and both ends.
pub(super) fn short(text: &str) -> String {
    if text.len() <= 80 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(32).collect();
    let tail: String = text.chars().rev().take(32).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head:?}...{tail:?} ({} bytes)", text.len())
}

/// The first field in which `got` is not the event `expected`, or `None` if it is the same event.
///
/// `occurred_at` counts to the microsecond: the precision [`Event::occurred_at`] promises.
pub(super) fn field_difference(got: &Event<C>, expected: &Event<C>) -> Option<String> {
    if got.id() != expected.id() {
        return Some(format!("id is {}, expected {}", got.id(), expected.id()));
    }
    if got.audience() != expected.audience() {
        return Some(format!("audience is {:?}, expected {:?}", got.audience(), expected.audience()));
    }
    if got.event_type() != expected.event_type() {
        return Some(format!("event_type is {:?}, expected {:?}", got.event_type(), expected.event_type()));
    }
    if got.category() != expected.category() {
        return Some(format!(
            "category is {}, expected {}",
            got.category().name(),
            expected.category().name()
        ));
    }
    if got.data() != expected.data() {
        let at = got.data().bytes().zip(expected.data().bytes()).position(|(a, b)| a != b);
        let at = at.unwrap_or(got.data().len().min(expected.data().len()));
        return Some(format!(
            "data differs from byte {at} on: it is {}, expected {}",
            short(got.data()),
            short(expected.data())
        ));
    }
    if got.occurred_at().timestamp_micros() != expected.occurred_at().timestamp_micros() {
        return Some(format!(
            "occurred_at is {:?}, expected {:?} (compared to the microsecond)",
            got.occurred_at(),
            expected.occurred_at()
        ));
    }
    None
}

/// What differs between two lists of events, or `None` if they hold the same events in the same order.
pub(super) fn events_mismatch(got: &[Event<C>], expected: &[Event<C>]) -> Option<String> {
    let divergence = (0..got.len().max(expected.len())).find(|&i| match (got.get(i), expected.get(i)) {
        (Some(g), Some(e)) => field_difference(g, e).is_some(),
        _ => true,
    })?;
    let got_ids: HashSet<EventId> = got.iter().map(Event::id).collect();
    let expected_ids: HashSet<EventId> = expected.iter().map(Event::id).collect();
    let missing = id_list(expected.iter().filter(|e| !got_ids.contains(&e.id())));
    let unexpected = id_list(got.iter().filter(|e| !expected_ids.contains(&e.id())));
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for event in got {
        *counts.entry(event.id()).or_default() += 1;
    }
    let repeated = id_list(got.iter().filter(|e| counts[&e.id()] > 1));
    let detail = match (got.get(divergence), expected.get(divergence)) {
        (Some(g), Some(e)) if g.id() == e.id() => {
            format!("event {}: {}", g.id(), field_difference(g, e).unwrap_or_default())
        }
        (Some(g), Some(e)) => format!("got {}, expected {}", describe(g), describe(e)),
        (None, Some(e)) => format!("nothing more, expected {}", describe(e)),
        (Some(g), None) => format!("got {} after every expected event", describe(g)),
        (None, None) => String::new(),
    };
    Some(format!(
        "got {} events, expected {}; missing {missing}, unexpected {unexpected}, repeated {repeated}; \
         first divergence at index {divergence}: {detail}",
        got.len(),
        expected.len()
    ))
}

/// Panics naming `rule` unless `got` holds exactly the events `expected`, in order, whole.
pub(super) fn assert_events(rule: &str, context: &str, got: &[Event<C>], expected: &[Event<C>]) {
    if let Some(mismatch) = events_mismatch(got, expected) {
        panic!("rule: {rule}; {context}: {mismatch}");
    }
}

/// Panics naming `rule` unless the replay's status is `expected`.
pub(super) fn assert_status(rule: &str, context: &str, replay: &Replay<C>, expected: ReplayStatus) {
    if replay.status != expected {
        panic!(
            "rule: {rule}; {context}: the replay is {}, expected {expected} (it holds {} events: {})",
            replay.status,
            replay.events.len(),
            id_list(&replay.events)
        );
    }
}
