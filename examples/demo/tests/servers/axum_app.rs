//! The axum example's endpoint over real HTTP, on a private redis-server: tokens (401s, one user per token), headers, 400s, cross-process delivery, replay, graceful shutdown.

use ssehub_demo::axum_app as axum_example;
use ssehub_harness::http_client;
use ssehub_harness::redis_server;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_example::{AppState, Auth, RETRY_AFTER_SECS, Revoked};
use http_client::{Client, call, ids_of};
use redis_server::RedisServer;
use ssehub::fixture::ExampleCategory as C;
use ssehub::fred::RedisHub;
use ssehub::shutdown::{SHUTDOWN_COMMENT, Shutdown};
use ssehub::sse::{EXPIRED_COMMENT, REVOKED_COMMENT};
use ssehub::{Audience, Event, EventSource, GroupId, Publisher, UserId};

const USER: &str = "a11ce000-0000-4000-8000-000000000001";
const OTHER: &str = "b0b00000-0000-4000-8000-000000000002";
const SECRET: &[u8] = b"the axum test's secret, 32 bytes or more";

/// The axum app on its own tokio runtime, and a second hub standing for another process.
struct Setup {
    addr: SocketAddr,
    auth: Auth,
    shutdown: Shutdown,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The app's own hub (a clone), for its counts.
    app_hub: axum_example::Hub,
    elsewhere: RedisHub<C>,
    runtime: tokio::runtime::Runtime,
    _redis: RedisServer,
}

fn setup() -> Setup {
    setup_with_cap(None)
}

/// The app on a hub with `per_user` as its per-user cap, if given.
fn setup_with_cap(per_user: Option<usize>) -> Setup {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let auth = Auth::new(SECRET).unwrap();
    let shutdown = Shutdown::with_reconnect_delay(Duration::from_millis(200), Duration::ZERO);
    let (addr, served, app_hub, elsewhere) = runtime.block_on(async {
        let mut builder = axum_example::Hub::builder(&redis.url()).unwrap();
        if let Some(cap) = per_user {
            builder = builder.max_subscriptions_per_user(cap);
        }
        let hub = builder.connect().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState {
            hub: hub.clone(),
            auth: auth.clone(),
            shutdown: shutdown.clone(),
            revoked: Revoked::default(),
        };
        let serving =
            axum::serve(listener, axum_example::app(state)).with_graceful_shutdown(shutdown.triggered());
        let served = tokio::spawn(async move { serving.await });
        (addr, served, hub, RedisHub::<C>::connect(&redis.url()).await.unwrap())
    });
    Setup { addr, auth, shutdown, served: Some(served), app_hub, elsewhere, runtime, _redis: redis }
}

impl Setup {
    fn publish_elsewhere(&self, audience: Audience, category: C, n: u32) -> Event<C> {
        let event = Event::new(audience, "note", category, format!("{{\"n\":{n}}}")).unwrap();
        self.runtime.block_on(self.elsewhere.publish(event.clone())).unwrap();
        event
    }

    fn token(&self, user: &str) -> String {
        self.auth.issue(user.parse().unwrap(), Duration::from_secs(600))
    }
}

fn frame_of(event: &Event<C>) -> String {
    let mut frame = String::new();
    ssehub::wire::encode_event(event, &mut frame);
    frame
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn axum_endpoint_streams_what_another_process_publishes_and_replays_on_reconnect() {
    let setup = setup();
    let user: UserId = USER.parse().unwrap();
    let token = setup.token(USER);
    let target = format!("/events?categories=ai,security&token={token}");

    let mut client = Client::connect(setup.addr);
    let head = client.send("GET", &target, &[], "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("x-accel-buffering"), Some("no"));
    assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");

    // Another user's event and a filtered-out one never arrive; the next one does.
    setup.publish_elsewhere(Audience::User(OTHER.parse().unwrap()), C::Ai, 1);
    setup.publish_elsewhere(Audience::User(user), C::Import, 2);
    let seen = setup.publish_elsewhere(Audience::User(user), C::Ai, 3);
    assert_eq!(ids_of(client.read_chunk().unwrap()), frame_of(&seen));
    drop(client);

    let missed = [
        setup.publish_elsewhere(Audience::Broadcast, C::Security, 4),
        setup.publish_elsewhere(Audience::User(user), C::Ai, 5),
    ];
    let mut client = Client::connect(setup.addr);
    assert_eq!(client.send("GET", &target, &[("Last-Event-ID", &seen.id().to_string())], "").status, 200);
    let expected: Vec<String> =
        std::iter::once("retry: 3000\n\n".to_owned()).chain(missed.iter().map(frame_of)).collect();
    assert_eq!(client.read_frames(3).into_iter().map(ids_of).collect::<Vec<_>>(), expected);

    // POST /publish on the app reaches the token's user's open stream.
    let (head, id) =
        call(setup.addr, "POST", &format!("/publish?category=security&token={token}"), &[], r#"{"x":1}"#);
    assert_eq!(head.status, 200, "{id}");
    assert_eq!(
        ids_of(client.read_chunk().unwrap()),
        format!("id: {id}\nevent: security\ndata: {{\"x\":1}}\n\n")
    );
}

#[test]
fn axum_endpoint_refuses_bad_input_with_400_before_streaming() {
    let setup = setup();
    let token = setup.token(USER);
    let (head, body) = call(setup.addr, "GET", &format!("/events?categories=nope&token={token}"), &[], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid category 'nope'; valid categories: data_sync, provider, ai, import, portfolio, security"
    );
    let (head, body) =
        call(setup.addr, "GET", &format!("/events?token={token}"), &[("Last-Event-ID", "7")], "");
    assert_eq!(head.status, 400);
    assert_eq!(
        body,
        "invalid event id: expected a hyphenated UUID such as 01936f3c-7d5e-7a10-8b2c-3d4e5f607182"
    );
    let (head, _) = call(
        setup.addr,
        "POST",
        &format!("/publish?broadcast=true&category=ai&token={token}"),
        &[],
        "not json",
    );
    assert_eq!(head.status, 400);
}

/// A missing, forged, expired or malformed token gets 401 with a plain body: no stream starts.
#[test]
fn axum_endpoint_refuses_missing_forged_and_expired_tokens_with_401() {
    let setup = setup();
    let user: UserId = USER.parse().unwrap();
    let forger = Auth::new(b"not the server's secret, but 32 bytes long").unwrap();
    let expired = setup.auth.issue_expiring_at(user, unix_now() - 3600);
    let valid = setup.token(USER);
    // The valid token's payload with another user put in: the signature no longer matches.
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let other_payload = setup.token(OTHER).split('.').nth(1).unwrap().to_owned();
    parts[1] = other_payload;
    let tampered = parts.join(".");
    // A token saying it needs no signature.
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", valid.split('.').nth(1).unwrap());

    let cases: [(&str, Option<String>, &str); 6] = [
        ("missing", None, "missing token"),
        ("forged", Some(forger.issue(user, Duration::from_secs(600))), "invalid token"),
        ("expired", Some(expired), "token expired"),
        ("tampered", Some(tampered), "invalid token"),
        ("unsigned", Some(unsigned), "invalid token"),
        ("garbage", Some("not-a-jwt".to_owned()), "invalid token"),
    ];
    for (what, token, message) in cases {
        for (in_cookie, target, headers) in [
            (
                false,
                token.as_ref().map_or("/events?categories=ai".to_owned(), |t| {
                    format!("/events?categories=ai&token={t}")
                }),
                vec![],
            ),
            (
                true,
                "/events?categories=ai".to_owned(),
                token.iter().map(|t| format!("sse_token={t}")).collect(),
            ),
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|cookie| ("Cookie", cookie.as_str())).collect();
            let (head, body) = call(setup.addr, "GET", &target, &headers, "");
            assert_eq!(head.status, 401, "{what} token (cookie: {in_cookie}): {body}");
            assert_ne!(head.header("content-type"), Some("text/event-stream"), "{what}: a stream started");
            assert_eq!(body, message, "{what} token (cookie: {in_cookie})");
        }
    }
    // Publishing needs a token too.
    let (head, _) = call(setup.addr, "POST", "/publish?broadcast=true&category=ai", &[], "{}");
    assert_eq!(head.status, 401);
}

/// A token opens its own user's stream only: a `user` parameter naming
/// someone else changes nothing, and a second user's token sees only theirs.
#[test]
fn axum_endpoint_streams_only_the_token_users_events() {
    let setup = setup();
    let (alice, bob): (UserId, UserId) = (USER.parse().unwrap(), OTHER.parse().unwrap());

    let mut alices = Client::connect(setup.addr);
    let target = format!("/events?user={OTHER}&categories=ai&token={}", setup.token(USER));
    assert_eq!(alices.send("GET", &target, &[], "").status, 200);
    assert_eq!(alices.read_chunk().unwrap(), "retry: 3000\n\n");
    let mut bobs = Client::connect(setup.addr);
    let cookie = format!("theme=dark; sse_token={}", setup.token(OTHER));
    assert_eq!(bobs.send("GET", "/events?categories=ai", &[("Cookie", &cookie)], "").status, 200);
    assert_eq!(bobs.read_chunk().unwrap(), "retry: 3000\n\n");

    let for_bob = setup.publish_elsewhere(Audience::User(bob), C::Ai, 1);
    let for_alice = setup.publish_elsewhere(Audience::User(alice), C::Ai, 2);
    assert_eq!(ids_of(alices.read_chunk().unwrap()), frame_of(&for_alice), "Alice's token got Bob's event");
    assert_eq!(ids_of(bobs.read_chunk().unwrap()), frame_of(&for_bob));
    let for_everyone = setup.publish_elsewhere(Audience::Broadcast, C::Ai, 3);
    assert_eq!(ids_of(bobs.read_chunk().unwrap()), frame_of(&for_everyone), "Bob's token got Alice's event");
    assert_eq!(ids_of(alices.read_chunk().unwrap()), frame_of(&for_everyone));
}

/// axum's graceful shutdown waits for open connections: bound to the same
/// signal, the streams end with the retry hint, and the server stops.
#[test]
fn axum_graceful_shutdown_ends_open_streams_with_a_retry_hint_and_stops() {
    let mut setup = setup();
    let mut client = Client::connect(setup.addr);
    let target = format!("/events?categories=ai&token={}", setup.token(USER));
    assert_eq!(client.send("GET", &target, &[], "").status, 200);
    assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");

    setup.shutdown.trigger();
    assert_eq!(client.read_chunk().unwrap(), format!("retry: 200\n\n: {SHUTDOWN_COMMENT}\n\n"));
    assert_eq!(client.read_chunk(), None, "the body ends");
    let served = setup.served.take().unwrap();
    let result =
        setup.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), served).await });
    result.expect("axum::serve returns once the streams ended").unwrap().unwrap();
}

/// A token expiring 2 s into a stream ends it at `exp` (a retry hint and the
/// closing comment); the reconnect with a fresh token and the last cursor gets
/// exactly what was published meanwhile, and the expired token gets 401.
#[test]
fn a_stream_ends_when_its_token_expires_and_a_fresh_token_resumes_exactly_after_it() {
    let setup = setup();
    let user: UserId = USER.parse().unwrap();
    let exp = unix_now() + 2;
    let short = setup.auth.issue_expiring_at(user, exp);
    let mut client = Client::connect(setup.addr);
    assert_eq!(client.send("GET", &format!("/events?categories=ai&token={short}"), &[], "").status, 200);
    assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");
    let seen = setup.publish_elsewhere(Audience::User(user), C::Ai, 1);
    let chunk = client.read_chunk().unwrap();
    let cursor = chunk.lines().next().and_then(|line| line.strip_prefix("id: ")).unwrap().to_owned();
    assert_eq!(ids_of(chunk), frame_of(&seen));

    assert_eq!(client.read_chunk().unwrap(), format!("retry: 250\n\n: {EXPIRED_COMMENT}\n\n"));
    let ended = SystemTime::now();
    assert_eq!(client.read_chunk(), None, "the body ends");
    let expired_at = UNIX_EPOCH + Duration::from_secs(exp);
    let late = ended.duration_since(expired_at).expect("the stream ended at or after the token's exp");
    println!("the stream ended {late:?} after its token expired");
    // 1 s is the bound asked for; a loaded machine gets three.
    assert!(late < Duration::from_secs(3), "the stream ended {late:?} after exp");

    let missed = setup.publish_elsewhere(Audience::User(user), C::Ai, 2);
    let (head, body) = call(setup.addr, "GET", &format!("/events?categories=ai&token={short}"), &[], "");
    // Within the validation's 5 s leeway the token still decodes; the deadline refuses it.
    assert_eq!((head.status, body.as_str()), (401, "the credential has expired"));
    let fresh = setup.token(USER);
    let mut client = Client::connect(setup.addr);
    let target = format!("/events?categories=ai&token={fresh}");
    assert_eq!(client.send("GET", &target, &[("Last-Event-ID", &cursor)], "").status, 200);
    let frames: Vec<String> = client.read_frames(2).into_iter().map(ids_of).collect();
    assert_eq!(frames, ["retry: 3000\n\n".to_owned(), frame_of(&missed)]);
}

/// `POST /logout` ends every stream of the user, here and on another process,
/// at once; other users' streams carry on; the logged-out token gets 401 and a
/// new login streams again.
#[test]
fn logout_ends_the_users_streams_on_every_process_and_its_token_gets_401() {
    let setup = setup();
    let (alice, bob): (UserId, UserId) = (USER.parse().unwrap(), OTHER.parse().unwrap());
    let token = setup.token(USER);
    let target = format!("/events?categories=ai&token={token}");
    let mut alices: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::connect(setup.addr);
            assert_eq!(client.send("GET", &target, &[], "").status, 200);
            assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");
            client
        })
        .collect();
    let mut bobs = Client::connect(setup.addr);
    assert_eq!(
        bobs.send("GET", &format!("/events?categories=ai&token={}", setup.token(OTHER)), &[], "").status,
        200
    );
    assert_eq!(bobs.read_chunk().unwrap(), "retry: 3000\n\n");
    let mut elsewhere =
        setup.runtime.block_on(setup.elsewhere.subscribe(alice, ssehub::CategorySet::all())).unwrap();

    let started = std::time::Instant::now();
    let (head, body) = call(setup.addr, "POST", &format!("/logout?token={token}"), &[], "");
    assert_eq!(head.status, 204, "{body}");
    for client in &mut alices {
        assert_eq!(client.read_chunk().unwrap(), format!(": {REVOKED_COMMENT}\n\n"));
        assert_eq!(client.read_chunk(), None, "the body ends");
    }
    let ended = setup.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut elsewhere)).await
    });
    assert!(matches!(ended, Ok(Some(Err(ssehub::Error::Revoked)))), "the other process's stream: {ended:?}");
    let took = started.elapsed();
    println!("logout ended 3 streams on 2 processes in {took:?}");
    assert!(took < Duration::from_secs(5), "logout took {took:?}");

    let for_bob = setup.publish_elsewhere(Audience::User(bob), C::Ai, 1);
    assert_eq!(ids_of(bobs.read_chunk().unwrap()), frame_of(&for_bob), "Bob's stream carries on");
    let (head, body) = call(setup.addr, "GET", &target, &[], "");
    assert_eq!((head.status, body.as_str()), (401, "token revoked"));
    let mut again = Client::connect(setup.addr);
    let login = format!("/events?categories=ai&token={}", setup.token(USER));
    assert_eq!(again.send("GET", &login, &[], "").status, 200, "a new login streams");
}

/// With a cap of 2 per user, a third connection gets exactly one 429 with
/// `Retry-After`; once a stream closes, the next connection succeeds.
#[test]
fn over_the_per_user_cap_a_connection_gets_429_and_a_closed_stream_frees_its_place() {
    let setup = setup_with_cap(Some(2));
    let target = format!("/events?categories=ai&token={}", setup.token(USER));
    let mut open = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(setup.addr);
        let head = client.send("GET", &target, &[], "");
        statuses.push(head.status);
        if head.status == 429 {
            assert_eq!(head.header("retry-after"), Some(RETRY_AFTER_SECS.to_string().as_str()));
        } else {
            open.push(client);
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Another user is not affected by Alice's cap.
    let mut bobs = Client::connect(setup.addr);
    assert_eq!(bobs.send("GET", &format!("/events?token={}", setup.token(OTHER)), &[], "").status, 200);

    drop(open.pop());
    // The server learns of the close from the socket; then the place is free.
    ssehub_harness::wait::wait_until(
        Duration::from_secs(30),
        "the closed stream's subscription to go",
        || setup.app_hub.stats().open_subscriptions == 2,
    );
    let mut client = Client::connect(setup.addr);
    assert_eq!(client.send("GET", &target, &[], "").status, 200, "the freed place is taken");
}

/// The `groups` claim, on Redis: a token naming `team:7` gets the group's events (published by
/// another process, and through `POST /publish?group=team:7`); a token of the same user without the
/// claim never does, though its query asks for the group. A broadcast marker published after each
/// group event shows the token without the claim has had everything it will get. Publishing to a
/// group the token does not name, and a token naming 65 groups, get 403.
#[test]
fn a_token_with_the_groups_claim_gets_the_groups_events_and_one_without_never_does() {
    use crate::frames_until;
    let setup = setup();
    let alice: UserId = USER.parse().unwrap();
    let team = GroupId::from_name("team:7");
    let with_claim = setup.auth.issue_with_groups(alice, &["team:7", "org:42"], Duration::from_secs(600));
    let without_claim = setup.token(USER);
    let open = |target: String| {
        let mut client = Client::connect(setup.addr);
        assert_eq!(client.send("GET", &target, &[], "").status, 200);
        assert_eq!(client.read_chunk().unwrap(), "retry: 3000\n\n");
        client
    };
    let mut member = open(format!("/events?categories=ai,security&token={with_claim}"));
    // Nothing in the request adds a group.
    let mut outsider =
        open(format!("/events?categories=ai,security&groups=team:7&group={team}&token={without_claim}"));

    let for_team = setup.publish_elsewhere(Audience::Group(team), C::Ai, 1);
    // A group neither token names.
    setup.publish_elsewhere(Audience::Group(GroupId::from_name("team:8")), C::Ai, 2);
    let marker = setup.publish_elsewhere(Audience::Broadcast, C::Security, 3);
    let marker_id = marker.id().to_string();
    assert_eq!(
        frames_until(&mut member, &marker_id).into_iter().map(ids_of).collect::<Vec<_>>(),
        [frame_of(&for_team), frame_of(&marker)]
    );
    assert_eq!(
        frames_until(&mut outsider, &marker_id).into_iter().map(ids_of).collect::<Vec<_>>(),
        [frame_of(&marker)],
        "a token without the groups claim got the group's event"
    );

    // Publishing to the group: the token naming it may, the other gets 403.
    let publish = |token: &str| {
        call(
            setup.addr,
            "POST",
            &format!("/publish?category=ai&group=team:7&token={token}"),
            &[],
            r#"{"x":1}"#,
        )
    };
    let (head, body) = publish(&without_claim);
    assert_eq!((head.status, body.as_str()), (403, "the token's groups claim does not name 'team:7'"));
    let (head, id) = publish(&with_claim);
    assert_eq!(head.status, 200, "{id}");
    let marker = setup.publish_elsewhere(Audience::Broadcast, C::Security, 4);
    let marker_id = marker.id().to_string();
    assert_eq!(
        frames_until(&mut member, &marker_id).into_iter().map(ids_of).collect::<Vec<_>>(),
        [format!("id: {id}\nevent: ai\ndata: {{\"x\":1}}\n\n"), frame_of(&marker)]
    );
    assert_eq!(
        frames_until(&mut outsider, &marker_id).into_iter().map(ids_of).collect::<Vec<_>>(),
        [frame_of(&marker)],
        "a token without the groups claim got the group's event"
    );

    // At most 64 groups: 65 are refused before any stream starts, with the reason.
    let names: Vec<String> = (0..65).map(|n| format!("team:{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let too_many = setup.auth.issue_with_groups(alice, &names, Duration::from_secs(600));
    let (head, body) = call(setup.addr, "GET", &format!("/events?token={too_many}"), &[], "");
    assert_eq!(head.status, 403);
    assert_eq!(body, "the token's groups claim: a subscription reads at most 64 groups, 65 were given");
    let sixty_four = setup.auth.issue_with_groups(alice, &names[..64], Duration::from_secs(600));
    open(format!("/events?token={sixty_four}"));
}
