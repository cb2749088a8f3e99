//! `resume` against a scripted backend: call order, de-duplication, the gap signal, and the ids errors carry.

use std::sync::Mutex;

use futures::channel::mpsc;
use futures::executor::block_on;
use futures::{StreamExt, stream};
use ssehub::fixture::ExampleCategory as C;
use ssehub::{
    Audience, CategorySet, Error, Event, EventId, EventSource, Positions, Replay, ReplayStatus, StreamRead,
    StreamReplay, UserId, resume,
};
use uuid::Uuid;

type Item = Result<Event<C>, Error>;

/// A backend whose live stream and replay are given by the test, recording the calls made to it.
struct Scripted {
    live: Mutex<Option<mpsc::UnboundedReceiver<Item>>>,
    replay: Mutex<Option<Result<Replay<C>, Error>>>,
    /// When set, `subscribe` fails with it.
    subscribe_error: Mutex<Option<Error>>,
    calls: Mutex<Vec<&'static str>>,
}

impl Scripted {
    fn new(live: Vec<Item>, replay: Result<Replay<C>, Error>) -> Self {
        let (sender, receiver) = mpsc::unbounded();
        for item in live {
            sender.unbounded_send(item).unwrap();
        }
        // The sender is dropped: the live stream ends after the scripted items.
        Self {
            live: Mutex::new(Some(receiver)),
            replay: Mutex::new(Some(replay)),
            subscribe_error: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// A backend whose `subscribe` fails with `error`.
    fn failing_subscribe(error: Error) -> Self {
        let source = Self::new(vec![], Ok(Replay::complete(vec![])));
        *source.subscribe_error.lock().unwrap() = Some(error);
        source
    }
}

impl EventSource<C> for Scripted {
    type Subscription = stream::BoxStream<'static, Item>;

    async fn disconnect(&self, _user: UserId) -> Result<(), Error> {
        self.calls.lock().unwrap().push("disconnect");
        Ok(())
    }

    async fn subscribe(
        &self,
        _reader: impl Into<ssehub::Reader> + Send,
        _filter: CategorySet<C>,
    ) -> Result<Self::Subscription, Error> {
        self.calls.lock().unwrap().push("subscribe");
        if let Some(error) = self.subscribe_error.lock().unwrap().take() {
            return Err(error);
        }
        Ok(self.live.lock().unwrap().take().expect("one subscription").boxed())
    }

    async fn missed_events(
        &self,
        _user: UserId,
        _last: EventId,
        _filter: CategorySet<C>,
    ) -> Result<Replay<C>, Error> {
        self.calls.lock().unwrap().push("missed_events");
        self.replay.lock().unwrap().take().expect("one replay")
    }

    /// The scripted replay as the user's stream's part, its events without
    /// positions (so `resume` tells live repeats by id); broadcasts complete.
    async fn missed_since(
        &self,
        _reader: impl Into<ssehub::Reader> + Send,
        _from: Positions,
        _filter: CategorySet<C>,
    ) -> Result<StreamReplay<C>, Error> {
        self.calls.lock().unwrap().push("missed_since");
        let replay = self.replay.lock().unwrap().take().expect("one replay")?;
        let complete = StreamRead { status: ReplayStatus::Complete, end: None };
        Ok(StreamReplay {
            events: replay.events,
            own: StreamRead { status: replay.status, end: None },
            broadcast: complete,
            groups: Vec::new(),
        })
    }
}

fn user() -> UserId {
    UserId::from_uuid(Uuid::from_u128(7))
}

fn events(count: usize) -> Vec<Event<C>> {
    (0..count)
        .map(|n| Event::new(Audience::User(user()), "t", C::Ai, format!("{{\"n\":{n}}}")).unwrap())
        .collect()
}

fn ok_ids(items: &[Item]) -> Vec<EventId> {
    items.iter().map(|item| item.as_ref().expect("an event").id()).collect()
}

#[test]
fn subscribes_before_replaying_and_skips_live_events_that_were_replayed() {
    let e = events(6);
    let live = vec![Ok(e[2].clone()), Ok(e[3].clone()), Ok(e[4].clone()), Ok(e[5].clone())];
    let source = Scripted::new(live, Ok(Replay::complete(vec![e[1].clone(), e[2].clone(), e[3].clone()])));
    let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
    assert_eq!(resumed.replay_status(), Some(ReplayStatus::Complete));
    assert_eq!(*source.calls.lock().unwrap(), ["subscribe", "missed_since"]);
    let items: Vec<Item> = block_on(resumed.collect());
    assert_eq!(ok_ids(&items), vec![e[1].id(), e[2].id(), e[3].id(), e[4].id(), e[5].id()]);
}

#[test]
fn the_last_event_id_itself_is_skipped_if_the_live_stream_carries_it() {
    let e = events(3);
    let live = vec![Ok(e[0].clone()), Ok(e[2].clone())];
    let source = Scripted::new(live, Ok(Replay::complete(vec![e[1].clone()])));
    let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
    let items: Vec<Item> = block_on(resumed.collect());
    assert_eq!(ok_ids(&items), vec![e[1].id(), e[2].id()]);
}

#[test]
fn without_a_last_event_id_nothing_is_replayed_only_live_events() {
    let e = events(2);
    // A first connection asks where each stream is, once live; the backend has nothing to replay.
    let source = Scripted::new(vec![Ok(e[0].clone()), Ok(e[1].clone())], Ok(Replay::complete(vec![])));
    let resumed = block_on(resume(&source, user(), None, CategorySet::all())).unwrap();
    assert_eq!(resumed.replay_status(), None);
    assert_eq!(*source.calls.lock().unwrap(), ["subscribe", "missed_since"]);
    let items: Vec<Item> = block_on(resumed.collect());
    assert_eq!(ok_ids(&items), vec![e[0].id(), e[1].id()]);
}

#[test]
fn an_incomplete_replay_starts_with_the_gap_signal_then_replays_then_goes_live() {
    for status in [ReplayStatus::Truncated, ReplayStatus::UnknownId, ReplayStatus::RetentionDisabled] {
        let e = events(4);
        let replayed = if status == ReplayStatus::RetentionDisabled { vec![] } else { vec![e[2].clone()] };
        let expected: Vec<EventId> = replayed.iter().map(Event::id).chain([e[3].id()]).collect();
        let source = Scripted::new(vec![Ok(e[3].clone())], Ok(Replay { events: replayed, status }));
        let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
        assert_eq!(resumed.replay_status(), Some(status));
        let mut items: Vec<Item> = block_on(resumed.collect());
        match items.remove(0) {
            Err(Error::Gap { last_delivered, .. }) => assert_eq!(last_delivered, Some(e[0].id()), "{status}"),
            other => panic!("{status}: the first item must be Error::Gap, got {other:?}"),
        }
        assert_eq!(ok_ids(&items), expected, "{status}");
    }
}

#[test]
fn lagged_names_the_last_event_the_resumed_stream_yielded_and_ends_it() {
    let e = events(3);
    // The backend's Lagged knows only what *it* delivered (here nothing).
    let live = vec![Ok(e[2].clone()), Err(Error::Lagged { last_delivered: None }), Ok(e[2].clone())];
    let source = Scripted::new(live, Ok(Replay::complete(vec![e[1].clone(), e[2].clone()])));
    let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
    let items: Vec<Item> = block_on(resumed.collect());
    assert_eq!(ok_ids(&items[..2]), vec![e[1].id(), e[2].id()]);
    assert!(matches!(items[2], Err(Error::Lagged { last_delivered: Some(id) }) if id == e[2].id()));
    assert_eq!(items.len(), 3, "nothing follows Lagged");
}

#[test]
fn lagging_before_yielding_anything_names_the_id_the_client_resumed_from() {
    let e = events(1);
    let source =
        Scripted::new(vec![Err(Error::Lagged { last_delivered: None })], Ok(Replay::complete(vec![])));
    let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
    let items: Vec<Item> = block_on(resumed.collect());
    assert!(matches!(items[..], [Err(Error::Lagged { last_delivered: Some(id) })] if id == e[0].id()));
}

#[test]
fn a_gap_in_the_live_stream_is_passed_on_with_the_last_yielded_id_and_the_stream_goes_on() {
    let e = events(3);
    let live =
        vec![Ok(e[1].clone()), Err(Error::Gap { last_delivered: None, stream: None }), Ok(e[2].clone())];
    let source = Scripted::new(live, Ok(Replay::complete(vec![])));
    let resumed = block_on(resume(&source, user(), Some(e[0].id().into()), CategorySet::all())).unwrap();
    let items: Vec<Item> = block_on(resumed.collect());
    assert_eq!(items.len(), 3);
    assert!(matches!(items[1], Err(Error::Gap { last_delivered: Some(id), .. }) if id == e[1].id()));
    assert_eq!(items[2].as_ref().unwrap().id(), e[2].id());
}

#[test]
fn errors_of_subscribe_and_replay_are_returned() {
    let source = Scripted::new(vec![], Err(Error::backend("replay store down")));
    let error =
        block_on(resume(&source, user(), Some(events(1)[0].id().into()), CategorySet::all())).unwrap_err();
    assert_eq!(error.to_string(), "backend error: replay store down");
    assert_eq!(*source.calls.lock().unwrap(), ["subscribe", "missed_since"]);

    let source = Scripted::failing_subscribe(Error::backend("pub/sub down"));
    let error =
        block_on(resume(&source, user(), Some(events(1)[0].id().into()), CategorySet::all())).unwrap_err();
    assert_eq!(error.to_string(), "backend error: pub/sub down");
    assert_eq!(*source.calls.lock().unwrap(), ["subscribe"], "no replay without a live subscription");

    let source = Scripted::failing_subscribe(Error::Closed);
    let error = block_on(resume(&source, user(), None, CategorySet::all())).unwrap_err();
    assert!(matches!(error, Error::Closed), "{error}");
}
