//! Memory held by idle subscriptions of the memory backend, measured with a counting allocator.
//!
//! The allocator is this test crate's global one and counts per thread: the
//! memory hub allocates on the thread that subscribes (no task, no thread of
//! its own), so the count is this test's alone while other tests run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use futures::executor::block_on;
use ssehub::fixture::ExampleCategory as C;
use ssehub::memory::MemoryHub;
use ssehub::{CategorySet, EventSource, UserId};
use uuid::Uuid;

/// The system allocator, counting the bytes each thread has allocated and not freed.
struct Counting;

thread_local! {
    /// Bytes this thread allocated minus bytes it freed (const-initialised, no destructor: usable
    /// from inside the allocator, even while the thread ends).
    static ALLOCATED: Cell<isize> = const { Cell::new(0) };
}

/// Adds `bytes` to this thread's count.
fn count(bytes: isize) {
    let _ = ALLOCATED.try_with(|allocated| allocated.set(allocated.get() + bytes));
}

/// This thread's count.
fn allocated() -> isize {
    ALLOCATED.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated per idle subscription (10 subscriptions for each of
/// `users` users), and bytes still allocated once they are all dropped.
fn bytes_per_idle_subscription(queue_capacity: usize, users: u128) -> (f64, isize) {
    let hub = MemoryHub::<C>::builder().queue_capacity(queue_capacity).build();
    let mut subscriptions = Vec::with_capacity(users as usize * 10);
    let before = allocated();
    for user in 0..users {
        for _ in 0..10 {
            let user = UserId::from_uuid(Uuid::from_u128(user + 1));
            subscriptions.push(block_on(hub.subscribe(user, CategorySet::all())).unwrap());
        }
    }
    let after = allocated();
    assert_eq!(hub.stats().open_subscriptions, subscriptions.len());
    let per_subscription = (after - before) as f64 / subscriptions.len() as f64;
    subscriptions.clear();
    let left_behind = allocated() - before;
    assert_eq!(hub.stats().users, 0);
    (per_subscription, left_behind)
}

#[test]
fn an_idle_subscription_holds_well_under_two_kib_whatever_its_queue_capacity() {
    // The `Subscription` handles themselves live in a vector reserved before
    // counting; what is counted is everything the hub allocates for them.
    let (small, _) = bytes_per_idle_subscription(1, 10_000);
    let (huge, left_behind) = bytes_per_idle_subscription(1 << 30, 10_000);
    eprintln!("bytes per idle subscription: {small:.0} (queue capacity 1), {huge:.0} (queue capacity 2^30)");
    eprintln!("bytes left behind after dropping all 100,000: {left_behind}");
    assert!(huge < 2048.0, "{huge:.0} bytes per idle subscription");
    // No buffer is sized by the capacity: both hubs cost the same.
    assert!((huge - small).abs() < 16.0, "capacity 1: {small:.0} B, capacity 2^30: {huge:.0} B");
    // Dropped subscriptions and their users give all their memory back.
    assert!(left_behind <= 0, "{left_behind} bytes left behind by 100,000 dropped subscriptions");
}
