//! The SSE endpoint over real HTTP (the demo server, raw TCP client): headers, retry, heartbeats, 400s, replay on reconnect.

use ssehub_demo::page as server;

use ssehub_harness::demo_process;
use ssehub_harness::http_client;

use std::time::Duration;

use http_client::{Client, call, ids_of};

use futures::executor::block_on;
use server::Topic as C;
use ssehub::memory::MemoryHub;
use ssehub::sse::SseOptions;
use ssehub::{Audience, DynHub, Event, EventId};

const ALICE: usize = 0;
const BOB: usize = 1;

/// A demo server without the generator, so every event is one the test published.
fn quiet_demo(heartbeat: Duration) -> server::RunningDemo {
    let options = server::DemoOptions {
        sse: SseOptions::new().retry(Duration::from_millis(1234)).heartbeat(heartbeat),
        generator_interval: None,
    };
    server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(MemoryHub::new()), options).unwrap()
}

fn user(index: usize) -> ssehub::UserId {
    server::USERS[index].id
}

fn publish(demo: &server::RunningDemo, audience: Audience, category: C, n: u32) -> Event<C> {
    let event =
        Event::new(audience, server::event_type_of(category), category, format!("{{\"n\":{n}}}")).unwrap();
    block_on(demo.demo().publish(event.clone())).unwrap();
    event
}

fn frame_of(event: &Event<C>) -> String {
    let mut frame = String::new();
    ssehub::wire::encode_event(event, &mut frame);
    frame
}

#[test]
fn events_response_has_the_sse_headers_and_starts_with_retry() {
    let demo = quiet_demo(Duration::from_secs(30));
    let mut client = Client::connect(demo.addr());
    let head = client.send("GET", "/events", &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(client.read_chunk().unwrap(), "retry: 1234\n\n");

    let event = publish(&demo, Audience::User(user(ALICE)), C::Ai, 1);
    assert_eq!(ids_of(client.read_chunk().unwrap()), frame_of(&event));
}

#[test]
fn heartbeats_arrive_while_the_stream_is_idle() {
    let demo = quiet_demo(Duration::from_millis(100));
    let mut client = Client::connect(demo.addr());
    assert_eq!(client.send("GET", "/events", &[], "").status, 200);
    assert_eq!(client.read_chunk().unwrap(), "retry: 1234\n\n");
    for _ in 0..3 {
        assert_eq!(client.read_chunk().unwrap(), ": heartbeat\n\n");
    }
}

#[test]
fn bad_categories_get_400_with_the_parser_message_and_no_stream() {
    let demo = quiet_demo(Duration::from_secs(30));
    let (head, body) = call(demo.addr(), "GET", "/events?categories=ai,crypto", &[], "");
    assert_eq!(head.status, 400);
    assert_eq!(head.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        body,
        "invalid category 'crypto'; valid categories: data_sync, provider, ai, import, portfolio, security"
    );
    assert!(demo.demo().served_streams().is_empty(), "no stream started");
}

#[test]
fn bad_last_event_id_header_gets_400_with_the_parser_message() {
    let demo = quiet_demo(Duration::from_secs(30));
    let (head, body) = call(demo.addr(), "GET", "/events", &[("Last-Event-ID", "42")], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
    );
    assert!(demo.demo().served_streams().is_empty(), "no stream started");
}

#[test]
fn bad_last_event_id_query_parameter_gets_400_with_the_parser_message() {
    let demo = quiet_demo(Duration::from_secs(30));
    let (head, body) = call(demo.addr(), "GET", "/events?lastEventId=not-an-id", &[], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
    );
    assert!(demo.demo().served_streams().is_empty(), "no stream started");
}

#[test]
fn malformed_cursors_get_400_naming_the_problem() {
    let demo = quiet_demo(Duration::from_secs(30));
    let head = "0193a6f4-5b1c-7d2e-8f30-4a5b6c7d8e9f";
    for (cursor, message) in [
        (format!("{head}~2~00000000~u1"), "invalid cursor: unknown version"),
        (format!("{head}~1~00000000~q1"), "invalid cursor: unknown stream kind"),
        (format!("{head}~1~00000000~b1~u1"), "invalid cursor: streams repeated or out of order"),
        (format!("{head}~1~00000000~u01"), "invalid cursor: not in canonical form"),
        (format!("{head}~1~00000000~u{}", "z".repeat(14)), "invalid cursor: bad stream position"),
        ("nonsense~1".to_owned(), "invalid cursor: it must start with a hyphenated event id"),
    ] {
        let (status, body) = call(demo.addr(), "GET", "/events", &[("Last-Event-ID", &cursor)], "");
        assert_eq!((status.status, body.as_str()), (400, message), "{cursor}");
    }
    assert!(demo.demo().served_streams().is_empty(), "no stream started");
}

#[test]
fn another_users_cursor_gets_400_and_no_stream() {
    let demo = quiet_demo(Duration::from_secs(30));
    let event = publish(&demo, Audience::User(user(ALICE)), C::Ai, 1);
    let mut alice = Client::connect(demo.addr());
    let target = format!("/events?user={}", user(ALICE));
    assert_eq!(alice.send("GET", &target, &[("Last-Event-ID", &event.id().to_string())], "").status, 200);
    let frames = alice.read_frames(1);
    assert_eq!(frames[0], "retry: 1234\n\n");
    let live = publish(&demo, Audience::User(user(ALICE)), C::Ai, 2);
    let frame = alice.read_chunk().unwrap();
    let cursor = frame.lines().next().unwrap().strip_prefix("id: ").unwrap().to_owned();
    assert!(cursor.starts_with(&live.id().to_string()), "{frame}");

    let target = format!("/events?user={}", user(BOB));
    let (head, body) = call(demo.addr(), "GET", &target, &[("Last-Event-ID", &cursor)], "");
    assert_eq!((head.status, body.as_str()), (400, "invalid cursor: it belongs to another user"));
    assert_eq!(demo.demo().served_streams().len(), 1, "only alice's stream started");
}

#[test]
fn bad_user_gets_400() {
    let demo = quiet_demo(Duration::from_secs(30));
    let (head, body) = call(demo.addr(), "GET", "/events?user=bob", &[], "");
    assert_eq!(head.status, 400);
    assert!(body.starts_with("invalid user: expected a hyphenated UUID"), "{body}");
}

#[test]
fn reconnect_with_last_event_id_header_replays_the_missed_events_then_goes_live() {
    let demo = quiet_demo(Duration::from_secs(30));
    let bob = Audience::User(user(BOB));
    let seen = publish(&demo, bob, C::Portfolio, 1);
    let missed = [
        publish(&demo, bob, C::Portfolio, 2),
        publish(&demo, Audience::Broadcast, C::Security, 3),
        publish(&demo, bob, C::Import, 4),
    ];
    // Not Bob's, or filtered out: never sent to him.
    publish(&demo, Audience::User(user(ALICE)), C::Portfolio, 5);
    publish(&demo, bob, C::Provider, 6);

    let mut client = Client::connect(demo.addr());
    let target = format!("/events?user={}&categories=portfolio,security,import", user(BOB));
    let head = client.send("GET", &target, &[("Last-Event-ID", &seen.id().to_string())], "");
    assert_eq!(head.status, 200);
    let frames: Vec<String> = client.read_frames(1 + missed.len()).into_iter().map(ids_of).collect();
    let expected: Vec<String> =
        std::iter::once("retry: 1234\n\n".to_owned()).chain(missed.iter().map(frame_of)).collect();
    assert_eq!(frames, expected);

    let live = publish(&demo, bob, C::Import, 7);
    assert_eq!(ids_of(client.read_chunk().unwrap()), frame_of(&live));

    let served = demo.demo().served_streams();
    assert_eq!(served[0]["last_event_id"], seen.id().to_string());
    assert_eq!(served[0]["replay_status"], "complete");
    assert_eq!(served[0]["replayed_events"], 3);
}

#[test]
fn reconnect_with_last_event_id_query_parameter_replays_too() {
    let demo = quiet_demo(Duration::from_secs(30));
    let alice = Audience::User(user(ALICE));
    let seen = publish(&demo, alice, C::DataSync, 1);
    let missed = publish(&demo, alice, C::DataSync, 2);

    let mut client = Client::connect(demo.addr());
    assert_eq!(client.send("GET", &format!("/events?lastEventId={}", seen.id()), &[], "").status, 200);
    assert_eq!(
        client.read_frames(2).into_iter().map(ids_of).collect::<Vec<_>>(),
        ["retry: 1234\n\n".to_owned(), frame_of(&missed)]
    );
}

#[test]
fn unknown_last_event_id_sends_the_gap_event_first() {
    let demo = quiet_demo(Duration::from_secs(30));
    let retained = publish(&demo, Audience::Broadcast, C::Ai, 1);
    let unknown = EventId::new();

    let mut client = Client::connect(demo.addr());
    assert_eq!(client.send("GET", "/events", &[("Last-Event-ID", &unknown.to_string())], "").status, 200);
    let frames = client.read_frames(3);
    assert_eq!(frames[1], format!("event: gap\ndata: {{\"last_event_id\":\"{unknown}\"}}\n\n"));
    // Unknown id: everything retained is replayed after the signal.
    assert_eq!(ids_of(frames[2].clone()), frame_of(&retained));
    assert_eq!(demo.demo().served_streams()[0]["replay_status"], "unknown id");
}

#[test]
fn drop_ends_the_users_streams_cleanly_and_no_one_elses() {
    let demo = quiet_demo(Duration::from_secs(30));
    let mut alice = Client::connect(demo.addr());
    assert_eq!(alice.send("GET", &format!("/events?user={}", user(ALICE)), &[], "").status, 200);
    alice.read_chunk().unwrap();
    let mut bob = Client::connect(demo.addr());
    assert_eq!(bob.send("GET", &format!("/events?user={}", user(BOB)), &[], "").status, 200);
    bob.read_chunk().unwrap();
    assert_eq!(demo.demo().open_streams(), 2);

    let (head, body) = call(demo.addr(), "POST", &format!("/drop?user={}", user(ALICE)), &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(body, r#"{"dropped":1}"#);
    // The final empty chunk: the response ended, it was not cut.
    assert_eq!(alice.read_chunk(), None);

    let event = publish(&demo, Audience::Broadcast, C::Security, 1);
    assert_eq!(ids_of(bob.read_chunk().unwrap()), frame_of(&event));
}

#[test]
fn publish_endpoint_publishes_to_a_user_or_everyone() {
    let demo = quiet_demo(Duration::from_secs(30));
    let mut carol = Client::connect(demo.addr());
    let carol_id = server::USERS[2].id;
    assert_eq!(carol.send("GET", &format!("/events?user={carol_id}"), &[], "").status, 200);
    carol.read_chunk().unwrap();

    let body =
        format!(r#"{{"user":"{carol_id}","category":"ai","event_type":"ai.insight","data":{{"x":[1,2]}}}}"#);
    let (head, response) =
        call(demo.addr(), "POST", "/publish", &[("Content-Type", "application/json")], &body);
    assert_eq!(head.status, 200, "{response}");
    let id: serde_json::Value = serde_json::from_str(&response).unwrap();
    let id = id["id"].as_str().unwrap();
    assert_eq!(
        ids_of(carol.read_chunk().unwrap()),
        format!("id: {id}\nevent: ai.insight\ndata: {{\"x\":[1,2]}}\n\n")
    );

    let body = r#"{"broadcast":true,"category":"security"}"#;
    let (head, response) = call(demo.addr(), "POST", "/publish", &[], body);
    assert_eq!(head.status, 200, "{response}");
    assert!(carol.read_chunk().unwrap().contains("event: security.alert\ndata: {}\n"));
}

#[test]
fn publish_endpoint_refuses_bad_requests_with_a_message() {
    let demo = quiet_demo(Duration::from_secs(30));
    let cases = [
        ("nonsense", "invalid JSON"),
        (r#"{"category":"ai"}"#, "give either \"user\": \"<uuid>\" or \"broadcast\": true"),
        (
            r#"{"broadcast":true,"category":"crypto"}"#,
            "invalid category 'crypto'; valid categories: data_sync",
        ),
        (
            r#"{"broadcast":true,"category":"ai","event_type":"a\nb"}"#,
            "invalid event type: contains CR, LF or NUL",
        ),
        (r#"{"user":"bob","category":"ai"}"#, "invalid user"),
    ];
    for (body, message) in cases {
        let (head, response) = call(demo.addr(), "POST", "/publish", &[], body);
        assert_eq!(head.status, 400, "{body}");
        assert!(response.starts_with(message), "{body}: {response}");
    }
}

#[test]
fn page_and_config_are_served() {
    let demo = quiet_demo(Duration::from_secs(30));
    let (head, page) = call(demo.addr(), "GET", "/", &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.contains("new EventSource("), "the page streams with EventSource");
    let (head, config) = call(demo.addr(), "GET", "/config", &[], "");
    assert_eq!(head.status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["users"][0]["id"], user(ALICE).to_string());
    assert_eq!(config["categories"].as_array().unwrap().len(), 6);
    assert_eq!(call(demo.addr(), "GET", "/nowhere", &[], "").0.status, 404);
    assert_eq!(call(demo.addr(), "DELETE", "/events", &[], "").0.status, 405);
}

#[test]
fn demo_binary_serves_on_the_port_it_prints() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_demo"));
    let help = std::process::Command::new(binary).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--port N"));
    let bad = std::process::Command::new(binary).arg("--prot").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown option '--prot'"));

    let demo = demo_process::DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &["--generator-ms", "50"]);
    let mut client = Client::connect(demo.addr());
    assert_eq!(client.send("GET", "/events", &[], "").status, 200);
    // The generator publishes: an event for Alice or everyone arrives.
    let frames = client.read_frames(2);
    assert!(frames[1].starts_with("id: "), "{frames:?}");
}

#[test]
fn a_client_that_goes_away_from_an_idle_stream_is_forgotten_without_waiting_for_a_heartbeat() {
    // hyper learns of the close from the read side (the demo's ReadyIo wakes it when the socket
    // reports the end of input), not from a failed write: with a 60 s heartbeat, nothing is written.
    let demo = quiet_demo(Duration::from_secs(60));
    let mut client = Client::connect(demo.addr());
    assert_eq!(client.send("GET", "/events", &[], "").status, 200);
    assert_eq!(client.read_chunk().unwrap(), "retry: 1234\n\n");
    assert_eq!(demo.demo().open_streams(), 1);
    drop(client);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while demo.demo().open_streams() > 0 {
        assert!(std::time::Instant::now() < deadline, "the stream of a closed connection is still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn over_the_per_user_cap_a_stream_gets_429_with_retry_after_and_a_closed_one_frees_its_place() {
    let hub = MemoryHub::builder().max_subscriptions_per_user(2).build();
    let options = server::DemoOptions { sse: SseOptions::new(), generator_interval: None };
    let demo = server::start("127.0.0.1:0".parse().unwrap(), DynHub::new(hub.clone()), options).unwrap();
    let target = format!("/events?user={}", user(0));
    let mut open: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::connect(demo.addr());
            assert_eq!(client.send("GET", &target, &[], "").status, 200);
            client
        })
        .collect();
    let (head, body) = call(demo.addr(), "GET", &target, &[], "");
    assert_eq!(head.status, 429, "{body}");
    assert_eq!(head.header("retry-after"), Some(server::RETRY_AFTER_SECS.to_string().as_str()));
    assert_eq!(body, "too many open subscriptions: the per-user cap of 2 is reached");
    // Another user has places of their own.
    let mut other = Client::connect(demo.addr());
    assert_eq!(other.send("GET", &format!("/events?user={}", user(1)), &[], "").status, 200);

    drop(open.pop());
    ssehub_harness::wait::wait_until(
        Duration::from_secs(30),
        "the closed stream's subscription to go",
        || hub.stats().open_subscriptions == 2,
    );
    let mut again = Client::connect(demo.addr());
    assert_eq!(again.send("GET", &target, &[], "").status, 200, "the freed place is taken");
}

/// `POST /publish` with `body`; the published event's id.
fn publish_json(demo: &server::RunningDemo, body: &str) -> String {
    let (head, response) =
        call(demo.addr(), "POST", "/publish", &[("Content-Type", "application/json")], body);
    assert_eq!(head.status, 200, "{body}: {response}");
    let response: serde_json::Value = serde_json::from_str(&response).unwrap();
    response["id"].as_str().unwrap().to_owned()
}

/// The cursor a stream's frame carries (what a browser sends back as `Last-Event-ID`).
fn cursor_of(frame: &str) -> String {
    frame.lines().next().and_then(|line| line.strip_prefix("id: ")).unwrap().to_owned()
}

/// The team (`team:demo`: Alice and Bob): over HTTP, a member's stream carries a team event and a
/// non-member's never does, though its query asks for the team; the same on replay after a
/// reconnect. Each time a broadcast marker published after the team event shows the non-member
/// has had everything it will get. `/config`, `/debug/connections` and `/debug/published` agree.
#[test]
fn team_events_reach_the_teams_members_and_never_anyone_else() {
    use crate::frames_until;
    let demo = quiet_demo(Duration::from_secs(30));
    const CAROL: usize = 2;
    let (_, config) = call(demo.addr(), "GET", "/config", &[], "");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["team"]["name"], "team:demo");
    assert_eq!(config["team"]["id"], ssehub::GroupId::from_name("team:demo").to_string());
    assert_eq!(
        config["team"]["members"],
        serde_json::json!([user(ALICE).to_string(), user(BOB).to_string()])
    );
    assert_eq!(config["users"][CAROL]["team"], false);

    let open = |target: String, last_event_id: Option<&str>| {
        let mut client = Client::connect(demo.addr());
        let headers: Vec<_> = last_event_id.map(|id| ("Last-Event-ID", id)).into_iter().collect();
        assert_eq!(client.send("GET", &target, &headers, "").status, 200);
        assert_eq!(client.read_chunk().unwrap(), "retry: 1234\n\n");
        client
    };
    let member_target = format!("/events?user={}", user(ALICE));
    // Membership is the server's: a query naming the team (by name or id) changes nothing.
    let outsider_target = format!("/events?user={}&groups=team:demo&group={}", user(CAROL), server::team());
    let mut member = open(member_target.clone(), None);
    let mut outsider = open(outsider_target.clone(), None);

    let frame =
        |id: &str, event_type: &str, data: &str| format!("id: {id}\nevent: {event_type}\ndata: {data}\n\n");
    let for_team = publish_json(&demo, r#"{"group":"team:demo","category":"ai","data":{"n":1}}"#);
    let marker = publish_json(&demo, r#"{"broadcast":true,"category":"security","data":{"marker":1}}"#);
    let members_frames = frames_until(&mut member, &marker);
    let outsiders_frames = frames_until(&mut outsider, &marker);
    assert_eq!(
        members_frames.iter().cloned().map(ids_of).collect::<Vec<_>>(),
        [frame(&for_team, "ai.insight", r#"{"n":1}"#), frame(&marker, "security.alert", r#"{"marker":1}"#)]
    );
    assert_eq!(
        outsiders_frames.iter().cloned().map(ids_of).collect::<Vec<_>>(),
        [frame(&marker, "security.alert", r#"{"marker":1}"#)],
        "a non-member got a team event"
    );

    // Both away: a team event and a marker; each reconnects with its last cursor.
    drop((member, outsider));
    let missed = publish_json(&demo, r#"{"group":"team:demo","category":"import","data":{"n":2}}"#);
    let marker = publish_json(&demo, r#"{"broadcast":true,"category":"security","data":{"marker":2}}"#);
    let mut member = open(member_target, Some(&cursor_of(members_frames.last().unwrap())));
    let mut outsider = open(outsider_target, Some(&cursor_of(outsiders_frames.last().unwrap())));
    assert_eq!(
        frames_until(&mut member, &marker).into_iter().map(ids_of).collect::<Vec<_>>(),
        [
            frame(&missed, "import.progress", r#"{"n":2}"#),
            frame(&marker, "security.alert", r#"{"marker":2}"#)
        ]
    );
    assert_eq!(
        frames_until(&mut outsider, &marker).into_iter().map(ids_of).collect::<Vec<_>>(),
        [frame(&marker, "security.alert", r#"{"marker":2}"#)],
        "a non-member got a team event on replay"
    );

    let served = demo.demo().served_streams();
    let groups_of = |who: usize| {
        let streams = served.iter().filter(|s| s["user"] == user(who).to_string());
        streams.map(|s| s["groups"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(groups_of(ALICE), vec![serde_json::json!(["group:team:demo"]); 2]);
    assert_eq!(groups_of(CAROL), vec![serde_json::json!([]); 2]);
    let published = |who: usize| {
        let (_, body) = call(demo.addr(), "GET", &format!("/debug/published?user={}", user(who)), &[], "");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["audience"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(published(BOB), ["group:team:demo", "broadcast", "group:team:demo", "broadcast"]);
    assert_eq!(published(CAROL), ["broadcast", "broadcast"]);
}

/// The generator sends the team an event now and then, labelled `"to": "team"` for the page.
#[test]
fn the_generator_publishes_to_the_team_now_and_then() {
    let team: Vec<_> = (0..10)
        .map(server::generated_event)
        .filter(|e| e.audience() == Audience::Group(server::team()))
        .collect();
    assert_eq!(team.len(), 2, "one event in five");
    assert!(team.iter().all(|e| e.data().contains(r#""to":"team""#)), "{team:?}");
}
