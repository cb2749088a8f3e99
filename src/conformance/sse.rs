//! The mid-stream rule: `resume` and `SseStream` pass gaps and backend errors on, checked against a parse of the SSE body.

use super::*;

pub(super) const RESUME_MIDSTREAM: &str = "resume passes a mid-stream Err(Error::Gap) on, naming the last event it yielded, \
                                and goes on; it passes a backend error on and goes on";
pub(super) const SSE_GAP: &str = "SseStream sends a mid-stream Gap as `event: gap` with data {\"last_event_id\":\"<id>\"} and no \
                       id, and goes on";
pub(super) const SSE_ERROR: &str = "SseStream ends the body after a backend error, with a comment that does not carry the \
                         error's text";

/// The text of the backend error the fault injector yields; it must never reach a client.
pub(super) const INJECTED_ERROR: &str = "injected failure talking to redis://secret-host:6379";

/// Mid-stream errors through `resume` and `SseStream`, over the hub under
/// test wrapped so that each subscription yields `Err(Error::Gap)` after the
/// user's 2nd event and an `Err(Error::Backend)` after the 4th.
///
/// `resume` passes the Gap on with `last_delivered` set to the last event it
/// yielded, then the following events; it passes the backend error on and
/// goes on with the events after it (only Lagged ends it). `SseStream` sends
/// the Gap as a [`GAP_EVENT`] frame with data
/// `{"last_event_id":"<id of the 2nd event>"}` and no `id:` field, goes on
/// with the 3rd and 4th events, then, after the backend error, sends a comment
/// (without the error's own text) and ends the body.
pub async fn resume_and_sse_stream_pass_mid_stream_gaps_and_backend_errors_on<F: HubFactory>(factory: &F) {
    let hub = factory.create(HubOptions::default()).await;

    // Through resume.
    let user = fresh_user();
    let source = InjectFaults { hub: &hub, gap_after: 2, error_after: 4 };
    let start = make_event(Audience::User(user), 0);
    publish(&hub, &start).await;
    let mut resumed = within("resume", resume(&source, user, Some(start.id().into()), CategorySet::all()))
        .await
        .expect("resume");
    let live: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &live {
        publish(&hub, event).await;
    }
    let ours: HashSet<EventId> = live.iter().chain([&start]).map(Event::id).collect();
    let mut items = Vec::new();
    while items.len() < live.len() + 2 {
        match next_item(&mut resumed, &format!("the resumed stream's items (rule: {RESUME_MIDSTREAM})")).await
        {
            Some(Ok(event)) if !ours.contains(&event.id()) => {}
            Some(item) => items.push(item),
            None => panic!("rule: {RESUME_MIDSTREAM}; the resumed stream ended after {items:?}"),
        }
    }
    let shape: Vec<String> = items
        .iter()
        .map(|item| match item {
            Ok(event) => format!("event {}", event.id()),
            Err(Error::Gap { last_delivered, .. }) => format!("gap after {last_delivered:?}"),
            Err(Error::Backend(_)) => "backend error".to_string(),
            Err(other) => format!("error {other}"),
        })
        .collect();
    let expected_shape: Vec<String> = [
        format!("event {}", live[0].id()),
        format!("event {}", live[1].id()),
        format!("gap after {:?}", Some(live[1].id())),
        format!("event {}", live[2].id()),
        format!("event {}", live[3].id()),
        "backend error".to_string(),
        format!("event {}", live[4].id()),
        format!("event {}", live[5].id()),
    ]
    .into();
    assert_eq!(shape, expected_shape, "rule: {RESUME_MIDSTREAM}");
    let events: Vec<Event<C>> = items.into_iter().filter_map(Result::ok).collect();
    assert_events(RESUME_MIDSTREAM, "the events around the errors", &events, &live);
    drop(resumed);

    // Through SseStream.
    let user = fresh_user();
    let start = make_event(Audience::User(user), 0);
    publish(&hub, &start).await;
    let resumed = within("resume", resume(&source, user, Some(start.id().into()), CategorySet::all()))
        .await
        .expect("resume");
    let live: Vec<Event<C>> = (1..=6).map(|n| make_event(Audience::User(user), n)).collect();
    for event in &live {
        publish(&hub, event).await;
    }
    let body = SseStream::new(resumed);
    let chunks: Vec<bytes::Bytes> =
        within(&format!("the end of the SSE body (rule: {SSE_ERROR})"), body.collect()).await;
    let text: String = chunks.iter().map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
    assert!(!text.contains(INJECTED_ERROR), "rule: {SSE_ERROR}; the body carries the error's text: {text:?}");
    let frames: Vec<Frame> =
        parse_frames(&text).into_iter().filter(|f| *f != Frame::comment("heartbeat")).collect();
    let ours: HashSet<String> = live.iter().chain([&start]).map(|e| e.id().to_string()).collect();
    // Foreign broadcasts may pass by on a shared server.
    let frames: Vec<Frame> =
        frames.into_iter().filter(|f| f.id.as_ref().is_none_or(|id| ours.contains(id))).collect();
    let event_frame = |event: &Event<C>| Frame {
        id: Some(event.id().to_string()),
        event: Some(event.event_type().to_string()),
        data: Some(event.data().to_string()),
        ..Frame::default()
    };
    let gap = Frame {
        event: Some(GAP_EVENT.to_string()),
        data: Some(format!("{{\"last_event_id\":\"{}\"}}", live[1].id())),
        ..Frame::default()
    };
    let expected_start =
        [event_frame(&live[0]), event_frame(&live[1]), gap, event_frame(&live[2]), event_frame(&live[3])];
    let (first, rest) = frames.split_first().unwrap_or_else(|| panic!("rule: {SSE_GAP}; an empty body"));
    assert!(first.retry.is_some(), "rule: {SSE_GAP}; the body starts with a retry frame, got {first:?}");
    if rest.len() != expected_start.len() + 1 || rest[..expected_start.len()] != expected_start {
        panic!(
            "rule: {SSE_GAP}; the frames are {rest:#?}, expected {expected_start:#?} and a closing comment; \
             the body: {text:?}"
        );
    }
    let closing = &rest[expected_start.len()];
    assert!(
        closing.comment.is_some() && closing.id.is_none() && closing.data.is_none(),
        "rule: {SSE_ERROR}; after a backend error the body ends with a comment, got {closing:?}"
    );
}

/// One frame of a text/event-stream body, as a client's parser sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) id: Option<String>,
    pub(super) event: Option<String>,
    pub(super) data: Option<String>,
    pub(super) retry: Option<String>,
    pub(super) comment: Option<String>,
}

impl Frame {
    fn comment(text: &str) -> Self {
        Self { comment: Some(text.to_string()), ..Self::default() }
    }
}

/// Splits a body into frames by the rules of the SSE format (lines end in LF
/// here, which is what ssehub writes): `field: value`, one leading space
/// dropped, `data` lines joined by LF, comments start with `:`.
pub(super) fn parse_frames(text: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut frame = Frame::default();
        for line in block.split('\n') {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            let slot = match field {
                "" => &mut frame.comment,
                "id" => &mut frame.id,
                "event" => &mut frame.event,
                "retry" => &mut frame.retry,
                "data" => {
                    match &mut frame.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => frame.data = Some(value.to_string()),
                    }
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value.to_string());
        }
        frames.push(frame);
    }
    frames
}
