//! A counting global allocator: the heap bytes a set of idle subscriptions holds, whatever the allocator keeps resident.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};

/// The system allocator, counting the bytes currently allocated while counting is on.
struct Counting;

/// Off by default: the throughput scenarios should not pay for a shared counter.
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
/// The highest `ALLOCATED` seen while counting (see [`HeapCounter::peak`]).
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// Adds `bytes` to the count and keeps the peak.
fn count(bytes: isize) {
    let now = ALLOCATED.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if bytes > 0 {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}
/// Calls to `alloc`, `alloc_zeroed` and `realloc` while counting is on.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            count(layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            count(layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            count(-(layout.size() as isize));
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            count(new_size as isize - layout.size() as isize);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts heap bytes from now on; read the net change with [`HeapCounter::allocated`].
///
/// Frees of memory allocated before counting began are counted too (as a
/// negative change): start counting before the allocations to measure, and
/// read the figure while they are alive.
pub struct HeapCounter {
    start: isize,
}

impl HeapCounter {
    pub fn start() -> Self {
        let start = ALLOCATED.load(Ordering::SeqCst);
        PEAK.store(start, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        Self { start }
    }

    /// The highest net heap bytes allocated since [`start`](Self::start) at any moment.
    pub fn peak(&self) -> i64 {
        (PEAK.load(Ordering::SeqCst) - self.start) as i64
    }

    /// Net heap bytes allocated since [`start`](Self::start).
    pub fn allocated(&self) -> i64 {
        (ALLOCATED.load(Ordering::SeqCst) - self.start) as i64
    }

    /// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made while any counter was on, process-wide.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::SeqCst)
    }
}

impl Drop for HeapCounter {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}
