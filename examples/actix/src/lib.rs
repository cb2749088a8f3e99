//! ssehub on actix-web 4: the SSE endpoint as an actix handler, a publishing route, and the server that the binary and the tests start.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /events/{user}?categories=orders,chat` | the user's stream and the broadcasts, resumed after `Last-Event-ID` (header, or `?lastEventId=`) |
//! | `POST /publish/{user}/{category}` | publishes the JSON body to the user; answers the event's id |
//!
//! Like the demo, it has no authentication: the user is whatever the path
//! names. A real application takes it from a verified credential instead (see
//! the axum example's signed token).

use std::convert::Infallible;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::{Stream, StreamExt};
use ssehub::memory::MemoryHub;
use ssehub::sse::{self, RequestError, SseOptions, SseRequest};
use ssehub::{Audience, Category, Event, Publisher, UserId, resume};

ssehub::categories! {
    /// What the example's events are about: the categories a client filters by (`?categories=chat`).
    pub enum Topic {
        /// Order updates.
        Orders = "orders",
        /// Chat messages.
        Chat = "chat",
    }
}

/// The hub behind both routes: in memory, one per process.
pub type Hub = MemoryHub<Topic>;

/// `GET /events/{user}?categories=..`: the user's stream, resumed after `Last-Event-ID`.
pub async fn events(request: HttpRequest, user: web::Path<String>, hub: web::Data<Hub>) -> HttpResponse {
    let asked = match sse_request(&request) {
        Ok(asked) => asked,
        Err(error) => return HttpResponse::BadRequest().body(error.to_string()),
    };
    let Ok(user) = user.parse::<UserId>() else { return HttpResponse::BadRequest().body("not a user id") };
    match resume(hub.get_ref(), user, asked.last_event_id, asked.filter).await {
        Ok(resumed) => sse_response(resumed.into_sse(SseOptions::new())),
        Err(error) => error_response(&error),
    }
}

/// What an actix request asks of its stream: [`SseRequest::from_parts`] on its query and its
/// `Last-Event-ID` (actix-web 4 is on `http` 0.2, so the one header is carried over to `http` 1).
pub fn sse_request(request: &HttpRequest) -> Result<SseRequest<Topic>, RequestError<Topic>> {
    let mut headers = http::HeaderMap::new();
    let last_event_id = request.headers().get(sse::LAST_EVENT_ID_HEADER);
    if let Some(value) = last_event_id.and_then(|value| http::HeaderValue::from_bytes(value.as_bytes()).ok())
    {
        headers.insert(sse::LAST_EVENT_ID_HEADER, value);
    }
    SseRequest::from_parts(Some(request.query_string()), &headers)
}

/// A streaming response with the SSE headers (`text/event-stream`, no caching, no proxy buffering).
pub fn sse_response(body: impl Stream<Item = web::Bytes> + 'static) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    for header in sse::RESPONSE_HEADERS {
        response.insert_header(header);
    }
    response.streaming(body.map(Ok::<_, Infallible>))
}

/// A refused subscribe as actix's response: [`sse::error_response`]'s status (401, 429 with
/// `Retry-After`, 503...), headers and message.
pub fn error_response(error: &ssehub::Error) -> HttpResponse {
    let answer = sse::error_response(error);
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        response.insert_header((name.as_str(), value.as_bytes()));
    }
    response.body(answer.into_body())
}

/// `POST /publish/{user}/{category}` with JSON data: publishes it to the user; answers the event's id.
pub async fn publish(path: web::Path<(String, String)>, data: String, hub: web::Data<Hub>) -> HttpResponse {
    let (user, category) = path.into_inner();
    let Ok(user) = user.parse::<UserId>() else { return HttpResponse::BadRequest().body("not a user id") };
    let Some(category) = Topic::from_name(&category) else {
        return HttpResponse::BadRequest().body(format!("unknown category '{category}'"));
    };
    let event = match Event::new(Audience::User(user), "update", category, data) {
        Ok(event) => event,
        Err(error) => return HttpResponse::BadRequest().body(error.to_string()),
    };
    let id = event.id();
    match hub.publish(event).await {
        Ok(()) => HttpResponse::Ok().body(id.to_string()),
        Err(error) => error_response(&error),
    }
}

/// The server on `listener`, serving [`events`] and [`publish`] from `hub`: run it on actix's runtime
/// (`actix_web::rt::System`, or `#[actix_web::main]`).
///
/// # Errors
///
/// The listener cannot be used.
pub fn server(listener: std::net::TcpListener, hub: Hub) -> std::io::Result<actix_web::dev::Server> {
    let hub = web::Data::new(hub);
    let app = move || {
        App::new()
            .app_data(hub.clone())
            .route("/events/{user}", web::get().to(events))
            .route("/publish/{user}/{category}", web::post().to(publish))
    };
    // Open streams end only when their clients go: a stop waits this long for them, then drops them.
    Ok(HttpServer::new(app).shutdown_timeout(5).listen(listener)?.run())
}
