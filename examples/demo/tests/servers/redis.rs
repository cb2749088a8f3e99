//! Several demo processes on one private redis-server (`--redis`) share events, and replay each other's.

use ssehub_harness::demo_process;
use ssehub_harness::http_client;
use ssehub_harness::redis_server;

use demo_process::DemoProcess;
use http_client::{Client, call, ids_of};
use redis_server::RedisServer;

const BOB: &str = "b0b00000-0000-4000-8000-000000000002";

fn publish(demo: &DemoProcess, body: &str) -> String {
    let (head, response) =
        call(demo.addr(), "POST", "/publish", &[("Content-Type", "application/json")], body);
    assert_eq!(head.status, 200, "{response}");
    let response: serde_json::Value = serde_json::from_str(&response).unwrap();
    response["id"].as_str().unwrap().to_owned()
}

#[test]
fn demo_processes_on_one_redis_deliver_and_replay_each_others_events() {
    let redis = RedisServer::start();
    let args = ["--redis", &redis.url(), "--generator-ms", "0"];
    let first = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    let second = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    assert_ne!(first.addr(), second.addr());

    let mut client = Client::connect(second.addr());
    assert_eq!(client.send("GET", &format!("/events?user={BOB}"), &[], "").status, 200);
    assert_eq!(client.read_chunk().unwrap(), "retry: 1000\n\n");

    let live = publish(&first, &format!(r#"{{"user":"{BOB}","category":"ai","data":{{"n":1}}}}"#));
    assert_eq!(
        ids_of(client.read_chunk().unwrap()),
        format!("id: {live}\nevent: ai.insight\ndata: {{\"n\":1}}\n\n")
    );
    drop(client);

    // Published on the first process while Bob was away; replayed by the second.
    let missed = publish(&first, r#"{"broadcast":true,"category":"security","data":{"n":2}}"#);
    let mut client = Client::connect(second.addr());
    let head = client.send("GET", &format!("/events?user={BOB}"), &[("Last-Event-ID", &live)], "");
    assert_eq!(head.status, 200);
    let frames = client.read_frames(2);
    assert_eq!(
        ids_of(frames[1].clone()),
        format!("id: {missed}\nevent: security.alert\ndata: {{\"n\":2}}\n\n")
    );
}

/// Presence across demo processes: a process killed with SIGKILL stops counting within its
/// presence expiry (2 s here), and one stopped with SIGTERM has removed its counts by the time
/// it exits.
#[test]
fn a_killed_process_stops_counting_within_its_presence_expiry_and_a_stopped_one_at_once() {
    use std::time::{Duration, Instant};

    use ssehub::fixture::ExampleCategory;
    use ssehub::fred::RedisHub;
    use ssehub::{Presence, UserId};
    use ssehub_harness::wait::wait_until;

    let redis = RedisServer::start();
    let args = ["--redis", &redis.url(), "--generator-ms", "0", "--presence-ttl-ms", "2000"];
    let killed = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    let mut stopped = DemoProcess::start(env!("CARGO_BIN_EXE_demo"), &args);
    let mut streams = Vec::new();
    for demo in [&killed, &stopped] {
        let mut client = Client::connect(demo.addr());
        assert_eq!(client.send("GET", &format!("/events?user={BOB}"), &[], "").status, 200);
        streams.push(client);
    }
    let bob: UserId = BOB.parse().unwrap();
    let observer = futures::executor::block_on(RedisHub::<ExampleCategory>::connect(&redis.url())).unwrap();
    let streams_of_bob = || futures::executor::block_on(observer.streams_of(bob)).unwrap();
    wait_until(Duration::from_secs(30), "both processes to count Bob's stream", || streams_of_bob() == 2);

    let killed_at = Instant::now();
    drop(killed); // SIGKILL: no goodbye
    wait_until(Duration::from_secs(30), "the killed process's count to expire", || streams_of_bob() == 1);
    let gone = killed_at.elapsed();
    println!("a killed process stopped counting {gone:?} after SIGKILL (expiry 2 s)");
    // The expiry, plus a margin for a loaded machine.
    assert!(gone < Duration::from_secs(5), "the killed process counted for {gone:?}");

    assert!(stopped.stop_with("TERM").success());
    assert_eq!(streams_of_bob(), 0, "a process that stopped cleanly left nothing behind");
    assert_eq!(futures::executor::block_on(observer.online_users()).unwrap(), 0);
    drop(streams);
}
