//! The axum example's binary: serves [`ssehub_demo::axum_app::app`] on a Redis server, or issues a token (`--issue-token`).
//!
//! See the `axum_app` module for the endpoint, the tokens (with their optional
//! `groups` claim: `--group NAME`) and graceful shutdown.

use std::process::ExitCode;
use std::time::Duration;

use ssehub::UserId;
use ssehub::shutdown::Shutdown;
use ssehub_demo::axum_app::{AppState, Auth, Hub, Revoked, SECRET_ENV, app, stop_signal};

const USAGE: &str = "usage: cargo run -p ssehub-demo --bin axum -- [--redis URL] [--port N]
       cargo run -p ssehub-demo --bin axum -- --issue-token USER_UUID [--valid-secs N] [--group NAME]...
  --redis URL          the Redis server (default redis://127.0.0.1:6379)
  --port N             port to listen on, on 127.0.0.1 (default 3000; 0 picks a free one)
  --issue-token USER   print a token for USER (valid 1 hour, or --valid-secs) and exit
  --group NAME         with --issue-token: the token's groups claim names NAME (repeat it for
                       more; at most 64): its streams read the group's events, and it may
                       publish to the group (POST /publish?group=NAME)
The token secret (at least 32 bytes) is read from the SSE_JWT_SECRET environment variable.";

#[tokio::main]
async fn main() -> ExitCode {
    let mut redis = "redis://127.0.0.1:6379".to_owned();
    let mut port = 3000u16;
    let mut issue_for: Option<UserId> = None;
    let mut valid_for = Duration::from_secs(3600);
    let mut groups: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--redis", Some(url)) => redis = url,
            ("--port", Some(n)) if n.parse::<u16>().is_ok() => port = n.parse().unwrap_or(port),
            ("--issue-token", Some(user)) if user.parse::<UserId>().is_ok() => issue_for = user.parse().ok(),
            ("--group", Some(name)) if !name.is_empty() => groups.push(name),
            ("--valid-secs", Some(n)) if n.parse::<u64>().is_ok() => {
                valid_for = Duration::from_secs(n.parse().unwrap_or(3600))
            }
            ("--help" | "-h", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("error: bad argument '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let auth = match std::env::var(SECRET_ENV)
        .map_err(|_| format!("set {SECRET_ENV}"))
        .and_then(|secret| Auth::new(secret.as_bytes()))
    {
        Ok(auth) => auth,
        Err(error) => {
            eprintln!("error: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(user) = issue_for {
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        println!("{}", auth.issue_with_groups(user, &groups, valid_for));
        return ExitCode::SUCCESS;
    }
    if !groups.is_empty() {
        eprintln!("error: --group goes with --issue-token\n{USAGE}");
        return ExitCode::from(2);
    }

    // Connected from inside tokio, the hub runs its Redis client on this runtime.
    let hub = match Hub::connect(&redis).await {
        Ok(hub) => hub,
        Err(error) => {
            eprintln!("error: cannot connect to {redis}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}/"),
        Err(error) => eprintln!("warning: no local address: {error}"),
    }
    let shutdown = Shutdown::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            stop_signal().await;
            shutdown.trigger();
        }
    });
    // Stops accepting on the signal, then waits for open connections: the
    // streams end by themselves, being bound to the same signal.
    let state = AppState { hub: hub.clone(), auth, shutdown: shutdown.clone(), revoked: Revoked::default() };
    let served = axum::serve(listener, app(state)).with_graceful_shutdown(shutdown.triggered()).await;
    // Before exiting: this instance's presence counts leave Redis with it.
    hub.shutdown().await;
    if let Err(error) = served {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
