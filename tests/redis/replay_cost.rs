//! The work of a Redis replay depends on what it returns, not on how much history is retained.

use crate::support as fred_support;
use ssehub_harness::redis_server;

use std::time::{Duration, Instant};

use fred_support::{C, builder, event, fresh_user, ids, stream_entry_of, within};
use redis_server::RedisServer;
use ssehub::fred::{RedisHub, Retention};
use ssehub::{Audience, CategorySet, Event, EventSource, Publisher, ReplayStatus};

/// The stream commands a replay ran: (command name, arguments) from the slow log, which logs every
/// command, those a script runs included.
fn logged_stream_commands(server: &RedisServer) -> Vec<Vec<String>> {
    let log = server.command(&["SLOWLOG", "GET", "1000"]);
    let mut commands: Vec<Vec<String>> = log
        .as_array()
        .expect("slowlog entries")
        .iter()
        .filter_map(|entry| {
            let args = entry.as_array()?.get(3)?.as_array()?;
            Some(args.iter().filter_map(|a| a.as_str().map(str::to_string)).collect::<Vec<_>>())
        })
        .filter(|args: &Vec<String>| {
            args.first().is_some_and(|c| {
                ["XRANGE", "XREVRANGE", "XINFO", "XREAD"].contains(&c.to_uppercase().as_str())
            })
        })
        .collect();
    commands.reverse();
    commands
}

fn command_calls(server: &RedisServer, command: &str) -> u64 {
    server
        .info_field("commandstats", &format!("cmdstat_{command}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

struct Measured {
    retained: u64,
    stream_commands: Vec<Vec<String>>,
    xrange_calls: u64,
    xrevrange_calls: u64,
    /// Script calls: each a round trip.
    script_calls: u64,
    elapsed: Duration,
}

async fn replay_after_tenth_from_last(server: &RedisServer, hub: &RedisHub<C>, history: usize) -> Measured {
    let user = fresh_user();
    let stream = hub.key_layout().stream(Audience::User(user));
    // The bulk of the history is written server-side, in ssehub's entry format, one event per
    // millisecond over the time before now (1,000 events a second, steadily), to keep the test
    // fast; the replay under test only needs it to be there. The last ten go through the hub.
    let filler = stream_entry_of(&event(Audience::User(user), 0), user);
    let bulk = history - 10;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let first_ms = now_ms - bulk as u64 - 5_000;
    let mut written = 0;
    while written < bulk {
        let chunk = (bulk - written).min(10_000);
        let reply = server.command(&[
            "EVAL",
            "for i = 0, tonumber(ARGV[3]) - 1 do \
               redis.call('XADD', KEYS[1], string.format('%.0f-0', tonumber(ARGV[2]) + i), 'event', ARGV[1]) \
             end return 1",
            "1",
            &stream,
            &filler,
            &(first_ms + written as u64).to_string(),
            &chunk.to_string(),
        ]);
        assert_eq!(reply.as_int(), Some(1), "{reply}");
        written += chunk;
    }
    let last_ten: Vec<Event<C>> = (history - 10..history).map(|n| event(Audience::User(user), n)).collect();
    for e in &last_ten {
        hub.publish(e.clone()).await.expect("publish");
    }
    let retained = server.command(&["XLEN", &stream]).as_int().unwrap() as u64;

    // One replay first, so the script is loaded on the server before the one measured.
    within("missed_events", hub.missed_events(user, last_ten[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    server.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]).expect_ok();
    server.command(&["CONFIG", "SET", "slowlog-max-len", "1000"]).expect_ok();
    server.command(&["SLOWLOG", "RESET"]).expect_ok();
    server.command(&["CONFIG", "RESETSTAT"]).expect_ok();
    let started = Instant::now();
    let replay = within("missed_events", hub.missed_events(user, last_ten[0].id(), CategorySet::all()))
        .await
        .expect("missed_events");
    let elapsed = started.elapsed();
    let measured = Measured {
        retained,
        stream_commands: logged_stream_commands(server),
        xrange_calls: command_calls(server, "xrange"),
        xrevrange_calls: command_calls(server, "xrevrange"),
        script_calls: command_calls(server, "evalsha") + command_calls(server, "eval"),
        elapsed,
    };
    server.command(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]).expect_ok();
    assert_eq!(replay.status, ReplayStatus::Complete);
    assert_eq!(ids(&replay.events), ids(&last_ten[1..]), "the nine events after the tenth from last");
    measured
}

#[test]
fn replay_after_the_tenth_from_last_event_costs_the_same_with_1000_and_100000_retained() {
    let server = RedisServer::start();
    futures::executor::block_on(async {
        let hub: RedisHub<C> = within(
            "connect",
            builder(&server.url(), "cost")
                .retention(Some(Retention::new(200_000, Duration::from_secs(3600))))
                .connect(),
        )
        .await
        .expect("connect");
        let small = replay_after_tenth_from_last(&server, &hub, 1_000).await;
        let large = replay_after_tenth_from_last(&server, &hub, 100_000).await;
        for m in [&small, &large] {
            println!(
                "{} retained: {} script call(s), {} XRANGE + {} XREVRANGE calls, replay took {:?}",
                m.retained, m.script_calls, m.xrange_calls, m.xrevrange_calls, m.elapsed
            );
            for command in &m.stream_commands {
                println!("    {}", command.join(" "));
            }
        }
        assert_eq!(small.retained, 1_000);
        assert_eq!(large.retained, 100_000);
        for m in [&small, &large] {
            let calls = m.xrange_calls + m.xrevrange_calls;
            assert!(calls <= 8, "{} retained: {calls} range commands", m.retained);
            assert_eq!(m.script_calls, 1, "{} retained: one round trip, the replay script", m.retained);
            // XINFO STREAM (without FULL) is constant work: it says what trimming removed.
            let (infos, ranges): (Vec<&Vec<String>>, Vec<&Vec<String>>) =
                m.stream_commands.iter().partition(|c| c[0].eq_ignore_ascii_case("XINFO"));
            for info in &infos {
                assert!(
                    info.len() == 3 && info[1].eq_ignore_ascii_case("STREAM"),
                    "only XINFO STREAM <key>, never FULL: {info:?}"
                );
            }
            assert!(infos.len() <= 2, "{} retained: {} XINFO calls", m.retained, infos.len());
            assert_eq!(calls as usize, ranges.len(), "the slow log saw every range command");
            for command in ranges {
                let count = command.iter().position(|a| a.eq_ignore_ascii_case("COUNT"));
                let count: u64 = count
                    .and_then(|i| command.get(i + 1))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a range command without COUNT: {command:?}"));
                assert!(count <= 512, "a range command reading up to {count} entries: {command:?}");
                assert!(
                    !(command[2] == "-" && command[3] == "+"),
                    "a range over the whole stream: {command:?}"
                );
            }
        }
        assert_eq!(
            small.xrange_calls + small.xrevrange_calls,
            large.xrange_calls + large.xrevrange_calls,
            "the same commands whatever the history"
        );
    });
}
