//! The bench's workload: users, subscriber filters, the events published to them, and the helpers every scenario shares.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::{Either, select};
use ssehub::fixture::ExampleCategory;
use ssehub::{Audience, Category, CategorySet, Event, EventSource, Publisher, UserId};
use uuid::Uuid;

/// The categories every scenario publishes.
pub type C = ExampleCategory;

/// A hub the scenarios can drive: any ssehub backend.
pub trait Hub: EventSource<C> + Publisher<C> + Clone + Send + Sync + 'static {}

impl<T: EventSource<C> + Publisher<C> + Clone + Send + Sync + 'static> Hub for T {}

/// The event type every bench event carries.
pub const EVENT_TYPE: &str = "bench.tick";

/// Target length of an event's data, in bytes.
const DATA_LEN: usize = 60;

/// The category of the event with sequence number `seq`: the six rotate.
pub fn category_of(seq: u64) -> C {
    C::ALL[(seq % C::ALL.len() as u64) as usize]
}

/// The filter of a user's subscriber number `index`: even ones take every
/// category, odd ones `data_sync,provider,ai`.
pub fn filter_of(index: usize) -> CategorySet<C> {
    if index.is_multiple_of(2) {
        CategorySet::all()
    } else {
        [C::DataSync, C::Provider, C::Ai].into_iter().collect()
    }
}

/// `count` user ids, fresh for this process so runs against one Redis never share keys.
pub fn users(count: usize) -> Vec<UserId> {
    let base = Uuid::now_v7().as_u128() & !0xFFFF_FFFF;
    (0..count as u128).map(|n| UserId::from_uuid(Uuid::from_u128(base + n))).collect()
}

/// The data of event `seq`: a JSON object of about 60 bytes holding the
/// sequence number and, for the latency scenario, the publish instant.
pub fn data(seq: u64, sent_ns: Option<u64>) -> String {
    let mut data = match sent_ns {
        Some(ns) => format!(r#"{{"seq":{seq},"sent_ns":{ns},"pad":""#),
        None => format!(r#"{{"seq":{seq},"source":"bench","pad":""#),
    };
    let pad = DATA_LEN.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data
}

/// The publish instant carried in `data` by [`data`], in nanoseconds since [`epoch`].
pub fn sent_ns(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits]).ok()?.parse().ok()
}

/// The instant latencies are measured from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Event `seq` for `user`.
pub fn event(user: UserId, seq: u64, sent_ns: Option<u64>) -> Event<C> {
    Event::new(Audience::User(user), EVENT_TYPE, category_of(seq), data(seq, sent_ns))
        .expect("the bench's event type is valid")
}

/// Resolves to `Some` output of `future`, or `None` after `limit`.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let timer = async_io::Timer::after(limit);
    match select(std::pin::pin!(future), timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Sleeps for `duration` on any executor.
pub async fn sleep(duration: Duration) {
    async_io::Timer::after(duration).await;
}

/// Per-subscriber delivery counters, one cache line each so that tasks on
/// different threads do not share lines.
#[repr(align(64))]
#[derive(Default)]
pub struct Counter(pub std::sync::atomic::AtomicU64);
