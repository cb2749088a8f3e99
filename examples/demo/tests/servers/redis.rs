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
