//! The SSE endpoint on axum + tokio with the Redis backend, the way an axum application writes it.
//!
//! ```text
//! cargo run --example axum --features fred -- --redis redis://127.0.0.1:6379 --port 3000
//! curl -N 'http://127.0.0.1:3000/events?user=a11ce000-0000-4000-8000-000000000001&categories=ai,security'
//! curl -X POST 'http://127.0.0.1:3000/publish?user=a11ce000-0000-4000-8000-000000000001&category=ai' \
//!      -d '{"message":"hello"}'
//! ```
//!
//! Every process serving this app on the same Redis delivers every event,
//! wherever it was published. The user comes from a `user` query parameter
//! here; a real application takes it from its session (cookie), since a
//! browser's `EventSource` cannot send custom headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::ExitCode;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use ssehub::fred::RedisHub;
use ssehub::sse::{self, SseStream};
use ssehub::{Audience, Category, Event, Publisher, UserId, resume};

ssehub::categories! {
    /// What this application's events are about: the categories a client filters by (`?categories=ai,security`).
    pub enum Topic {
        /// Synchronisation of account data.
        DataSync = "data_sync",
        /// Events from an external data provider.
        Provider = "provider",
        /// Results of AI analyses.
        Ai = "ai",
        /// Progress of imports.
        Import = "import",
        /// Portfolio changes.
        Portfolio = "portfolio",
        /// Security notices.
        Security = "security",
    }
}

/// The hub every handler shares (a cheap clone).
pub type Hub = RedisHub<Topic>;

/// A handler's refusal: a status and a message for the client.
type Refusal = (StatusCode, String);

fn bad_request(error: impl ToString) -> Refusal {
    (StatusCode::BAD_REQUEST, error.to_string())
}

/// The application: `GET /events` streams, `POST /publish` publishes.
pub fn app(hub: Hub) -> Router {
    Router::new().route("/events", get(events)).route("/publish", post(publish)).with_state(hub)
}

/// `GET /events?user=<uuid>&categories=a,b[&lastEventId=<id>]`: every input checked before the stream starts.
async fn events(
    State(hub): State<Hub>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let query = query.as_deref();
    let filter = sse::categories::<Topic>(query).map_err(bad_request)?;
    let last_event_id =
        sse::last_event_id(headers.get(sse::LAST_EVENT_ID_HEADER).map(|v| v.as_bytes()), query)
            .map_err(bad_request)?;
    let user = user_param(query)?;

    let events = resume(&hub, user, last_event_id, filter)
        .await
        .map_err(|error| (StatusCode::SERVICE_UNAVAILABLE, format!("cannot subscribe: {error}")))?;
    let body = Body::from_stream(SseStream::new(events).map(Ok::<_, Infallible>));
    Ok((sse::RESPONSE_HEADERS, body).into_response())
}

/// `POST /publish?user=<uuid>|broadcast=true&category=ai[&event_type=..]` with the JSON data as body.
async fn publish(
    State(hub): State<Hub>,
    Query(params): Query<HashMap<String, String>>,
    data: String,
) -> Result<String, Refusal> {
    let audience = match (params.get("user"), params.get("broadcast").map(String::as_str)) {
        (Some(user), None) => Audience::User(user.parse().map_err(|_| bad_request("invalid user"))?),
        (None, Some("true")) => Audience::Broadcast,
        _ => return Err(bad_request("give either user=<uuid> or broadcast=true")),
    };
    let category = params.get("category").map(String::as_str).unwrap_or_default();
    let category =
        Topic::from_name(category).ok_or_else(|| bad_request(format!("invalid category '{category}'")))?;
    serde_json::from_str::<serde_json::Value>(&data)
        .map_err(|e| bad_request(format!("data is not JSON: {e}")))?;
    let event_type = params.get("event_type").map_or(category.name(), String::as_str);
    let event = Event::new(audience, event_type, category, data).map_err(bad_request)?;
    let id = event.id();
    hub.publish(event)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("cannot publish: {e}")))?;
    Ok(id.to_string())
}

fn user_param(query: Option<&str>) -> Result<UserId, Refusal> {
    let value = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == "user")
        .map(|(_, value)| value)
        .ok_or_else(|| bad_request("missing user"))?;
    value.parse().map_err(|_| bad_request("invalid user: expected a hyphenated UUID"))
}

const USAGE: &str = "usage: cargo run --example axum --features fred -- [--redis URL] [--port N]
  --redis URL  the Redis server (default redis://127.0.0.1:6379)
  --port N     port to listen on, on 127.0.0.1 (default 3000; 0 picks a free one)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut redis = "redis://127.0.0.1:6379".to_owned();
    let mut port = 3000u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--redis", Some(url)) => redis = url,
            ("--port", Some(n)) if n.parse::<u16>().is_ok() => port = n.parse().unwrap_or(port),
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
    if let Err(error) = axum::serve(listener, app(hub)).await {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
