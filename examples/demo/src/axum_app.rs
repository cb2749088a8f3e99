//! The SSE endpoint on axum + tokio with the Redis backend, the way an axum application writes it: signed tokens, graceful shutdown.
//!
//! ```text
//! export SSE_JWT_SECRET=$(head -c 32 /dev/urandom | base64)   # shared by every instance
//! cargo run -p ssehub-demo --bin axum -- --redis redis://127.0.0.1:6379 --port 3000
//! TOKEN=$(cargo run -q -p ssehub-demo --bin axum -- --issue-token a11ce000-0000-4000-8000-000000000001 --group team:7)
//! curl -N "http://127.0.0.1:3000/events?categories=ai,security&token=$TOKEN"
//! curl -X POST "http://127.0.0.1:3000/publish?category=ai&token=$TOKEN" -d '{"message":"hello"}'
//! curl -X POST "http://127.0.0.1:3000/publish?category=ai&group=team:7&token=$TOKEN" -d '{"message":"hi team"}'
//! ```
//!
//! Every process serving this app on the same Redis delivers every event,
//! wherever it was published.
//!
//! **Who the user is** comes from a signed, expiring token (a JWT, HS256,
//! checked by `jsonwebtoken`): the `sse_token` cookie, which a same-origin
//! `EventSource` sends by itself, or else a `token` query parameter
//! (`EventSource` cannot set an `Authorization` header). A missing, forged or
//! expired token gets 401 before any stream starts; there is no `user`
//! parameter to name someone else. Prefer the cookie: a query string ends up
//! in access logs. Tokens are issued by the application's login (here
//! [`Auth::issue`], or `--issue-token`).
//!
//! **Groups** come from the token too: its optional `groups` claim, an array
//! of group names (`["team:7", "org:42"]`, each `GroupId::from_name`), is
//! what the stream reads beside the user's own events and the broadcasts. A
//! token without the claim reads no group; nothing in the request adds one. A
//! token naming more than 64 groups gets 403 on `/events`. `POST /publish`
//! with `group=<name>` publishes to one of the token's groups (403 for a group
//! the token does not name).
//!
//! **Sessions:** every stream ends when its token expires (a short `retry:`
//! hint, so the browser reconnects with the token the page refreshed
//! meanwhile, and resumes exactly); `POST /logout` revokes the token's session
//! (its tokens get 401 from then on) and ends every stream of its user on
//! every instance; a user over the per-user cap gets 429 with `Retry-After`.
//!
//! **Graceful shutdown:** on SIGTERM or Ctrl-C every open stream gets a short
//! `retry:` hint and ends (they are bound to one [`Shutdown`]), so axum's
//! `with_graceful_shutdown`, which waits for open connections, can finish;
//! browsers reconnect to another instance with `Last-Event-ID` and miss nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use ssehub::fred::RedisHub;
use ssehub::shutdown::Shutdown;
use ssehub::sse::{SseOptions, SseRequest};
use ssehub::{Audience, Category, Event, EventSource, GroupId, Groups, Publisher, Reader, UserId, resume};

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

/// The cookie a browser's `EventSource` sends the token in.
pub const TOKEN_COOKIE: &str = "sse_token";

/// The query parameter a token may come in instead.
pub const TOKEN_PARAM: &str = "token";

/// The environment variable holding the secret tokens are signed with.
pub const SECRET_ENV: &str = "SSE_JWT_SECRET";

/// The shortest secret accepted: HS256 wants at least 256 bits.
pub const MIN_SECRET_LEN: usize = 32;

/// A handler's refusal: a status and a message for the client.
type Refusal = (StatusCode, String);

fn bad_request(error: impl ToString) -> Refusal {
    (StatusCode::BAD_REQUEST, error.to_string())
}

fn unauthorized(message: &str) -> Refusal {
    (StatusCode::UNAUTHORIZED, message.to_owned())
}

fn forbidden(message: impl ToString) -> Refusal {
    (StatusCode::FORBIDDEN, message.to_string())
}

/// What a token says: whose it is (`sub`, a user's UUID), until when (`exp`,
/// Unix seconds), which login it is (`sid`, a session id, so that one login
/// can be revoked without the others) and, optionally, which groups its user
/// reads (`groups`, group names).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    sid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

/// Who a valid token is for, until when, and which session it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bearer {
    /// The user.
    pub user: UserId,
    /// When the token expires: the deadline of every stream opened with it.
    pub expires_at: SystemTime,
    /// The session (login) it belongs to.
    pub session: String,
    /// The names of the groups its user reads (the `groups` claim; empty without it).
    pub groups: Vec<String>,
}

impl Bearer {
    /// Who its streams are for: the user, and the groups the token names (`GroupId::from_name` of each).
    ///
    /// # Errors
    ///
    /// 403 when the token names more than 64 groups ([`ssehub::TooManyGroups`]'s message).
    pub fn reader(&self) -> Result<Reader, (StatusCode, String)> {
        let groups = Groups::new(self.groups.iter().map(|name| GroupId::from_name(name)))
            .map_err(|error| forbidden(format!("the token's groups claim: {error}")))?;
        Ok(Reader::new(self.user, groups))
    }
}

/// Issues and checks the tokens that say who a stream is for (HS256 with one shared secret).
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    /// Tokens signed with `secret` (at least [`MIN_SECRET_LEN`] bytes), which
    /// every instance serving the app must share.
    ///
    /// # Errors
    ///
    /// The secret is too short.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("the token secret must be at least {MIN_SECRET_LEN} bytes"));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Instances' clocks may differ a little; not by more.
        validation.leeway = 5;
        let key_error = |error: jsonwebtoken::errors::Error| format!("unusable token secret: {error}");
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(key_error)?,
            decoding: DecodingKey::from_secret(secret).map_err(key_error)?,
            validation,
        })
    }

    /// A token for `user`, valid for `valid_for` from now: what the application's login hands out.
    pub fn issue(&self, user: UserId, valid_for: Duration) -> String {
        self.issue_expiring_at(user, unix_now() + valid_for.as_secs())
    }

    /// A token for `user` that expires at `exp` (Unix seconds), for a new session.
    pub fn issue_expiring_at(&self, user: UserId, exp: u64) -> String {
        self.sign(user, exp, Vec::new())
    }

    /// A token for `user`, valid for `valid_for`, whose `groups` claim names `groups` (none: no claim).
    pub fn issue_with_groups(&self, user: UserId, groups: &[&str], valid_for: Duration) -> String {
        let groups = groups.iter().map(|&name| name.to_owned()).collect();
        self.sign(user, unix_now() + valid_for.as_secs(), groups)
    }

    fn sign(&self, user: UserId, exp: u64, groups: Vec<String>) -> String {
        let claims = Claims { sub: user.to_string(), exp, sid: ssehub::EventId::new().to_string(), groups };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signs any claims")
    }

    /// Who a valid token is for.
    ///
    /// # Errors
    ///
    /// 401 when the token is expired, badly signed, malformed, or not for a user id.
    fn bearer(&self, token: &str) -> Result<Bearer, Refusal> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => unauthorized("token expired"),
                // Which check failed is no business of a client with a bad token.
                _ => unauthorized("invalid token"),
            })?
            .claims;
        let user = claims.sub.parse().map_err(|_| unauthorized("invalid token"))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp);
        Ok(Bearer { user, expires_at, session: claims.sid, groups: claims.groups })
    }

    /// Who the request's token is for: the [`TOKEN_COOKIE`] cookie, else the [`TOKEN_PARAM`] query parameter.
    fn bearer_of(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Bearer, Refusal> {
        let token = token_cookie(headers).or_else(|| {
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .find(|(key, _)| key == TOKEN_PARAM)
                .map(|(_, value)| value.into_owned())
        });
        match token {
            Some(token) => self.bearer(&token),
            None => Err(unauthorized("missing token")),
        }
    }
}

/// The sessions logged out, whose tokens are refused although unexpired.
///
/// Kept in this process: an application serving from several instances keeps
/// it where every instance reads it (its session store), as it does for its
/// other pages. [`disconnect`](ssehub::EventSource::disconnect) ends the streams
/// on every instance either way; the list decides their reconnection.
#[derive(Clone, Default)]
pub struct Revoked(Arc<Mutex<HashSet<String>>>);

impl Revoked {
    fn insert(&self, session: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(session.to_owned());
    }

    fn contains(&self, session: &str) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(session)
    }
}

/// The value of the [`TOKEN_COOKIE`] cookie in the request's `Cookie` headers
/// (`name=value` pairs separated by `;`, RFC 6265).
fn token_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// What every handler shares: the hub, the token checker, the shutdown signal, the revoked sessions.
#[derive(Clone)]
pub struct AppState {
    /// Events are published to and streamed from it.
    pub hub: Hub,
    /// Says who a request is for.
    pub auth: Auth,
    /// Every `/events` stream is bound to it; trigger it to stop the server.
    pub shutdown: Shutdown,
    /// Sessions logged out (`POST /logout`): their tokens get 401.
    pub revoked: Revoked,
}

/// How long a client over the per-user cap is asked to wait (`Retry-After`, seconds).
pub use ssehub::sse::RETRY_AFTER_SECS;

/// The application: `GET /events` streams, `POST /publish` publishes, `POST /logout` ends a session.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .route("/logout", post(logout))
        .with_state(state)
}

impl AppState {
    /// Who the request is for, unless its session was logged out.
    fn bearer_of(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Bearer, Refusal> {
        let bearer = self.auth.bearer_of(headers, query)?;
        if self.revoked.contains(&bearer.session) {
            return Err(unauthorized("token revoked"));
        }
        Ok(bearer)
    }
}

/// `GET /events?categories=a,b[&lastEventId=<id>]` with a token: every input checked before the stream starts.
///
/// A bad category or id is a 400 (the [`SseRequest`] extractor), a missing or
/// revoked token a 401, a token naming more than 64 groups a 403, a user over
/// the cap a 429 with `Retry-After`, another user's cursor a 400
/// (`ssehub::Error` as a response). The stream reads the token's user and its
/// groups. It ends when the token expires; the browser reconnects with the
/// token it holds then.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    asked: SseRequest<Topic>,
) -> Result<impl IntoResponse + use<>, Response> {
    let bearer = state.bearer_of(&headers, query.as_deref()).map_err(IntoResponse::into_response)?;
    let reader = bearer.reader().map_err(IntoResponse::into_response)?;
    let events = resume(&state.hub, reader, asked.last_event_id, asked.filter).await;
    let body = events.map_err(IntoResponse::into_response)?.into_sse(SseOptions::new());
    body.with_shutdown(&state.shutdown).with_deadline(bearer.expires_at).map_err(IntoResponse::into_response)
}

/// `POST /logout` with a token: its session's tokens are refused from now on, and every open
/// stream of its user ends, on every instance (those of the user's other sessions reconnect).
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Refusal> {
    let bearer = state.bearer_of(&headers, query.as_deref())?;
    state.revoked.insert(&bearer.session);
    state
        .hub
        .disconnect(bearer.user)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("cannot disconnect: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /publish?category=ai[&broadcast=true | &group=<name>][&event_type=..]` with a token and the
/// JSON data as body: to the token's user, to everyone, or to one of the token's groups (403 for a
/// group its `groups` claim does not name).
async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Query(params): Query<HashMap<String, String>>,
    data: String,
) -> Result<String, Refusal> {
    let bearer = state.bearer_of(&headers, query.as_deref())?;
    let audience = audience_of(&bearer, &params)?;
    let category = params.get("category").map(String::as_str).unwrap_or_default();
    let category =
        Topic::from_name(category).ok_or_else(|| bad_request(format!("invalid category '{category}'")))?;
    serde_json::from_str::<serde_json::Value>(&data)
        .map_err(|e| bad_request(format!("data is not JSON: {e}")))?;
    let event_type = params.get("event_type").map_or(category.name(), String::as_str);
    let event = Event::new(audience, event_type, category, data).map_err(bad_request)?;
    let id = event.id();
    state
        .hub
        .publish(event)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("cannot publish: {e}")))?;
    Ok(id.to_string())
}

/// Who `POST /publish` publishes to: the bearer's user, everyone (`broadcast=true`), or one of the
/// bearer's groups (`group=<name>`).
fn audience_of(bearer: &Bearer, params: &HashMap<String, String>) -> Result<Audience, Refusal> {
    let broadcast = match params.get("broadcast").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_request("broadcast is true or false")),
    };
    match (broadcast, params.get("group")) {
        (false, None) => Ok(Audience::User(bearer.user)),
        (true, None) => Ok(Audience::Broadcast),
        (false, Some(name)) if bearer.groups.contains(name) => Ok(Audience::Group(GroupId::from_name(name))),
        (false, Some(name)) => Err(forbidden(format!("the token's groups claim does not name '{name}'"))),
        (true, Some(_)) => Err(bad_request("give broadcast=true or group=<name>, not both")),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
