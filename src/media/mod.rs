//! Media: the sans-IO building blocks of a connection's media path — RTP/RTCP, SRTP,
//! DTMF, codecs, jitter buffer — owned and ticked by the engine's workers.
//!
//! Must not: touch sockets, read the clock or allocate on the packet path; every module takes
//! `now` and caller-provided buffers.

pub mod codec;
pub mod dtmf;
pub mod energy;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod ogg_opus;
pub mod opus;
pub mod player;
pub mod prefetch;
pub mod recording_file;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod srtp;
pub mod tone;
pub mod wav;

/// A counting global allocator for tests that prove the packet path allocates nothing, and
/// that measure what a piece of state holds. A binary can have only one `#[global_allocator]`,
/// so every module's test shares this one.
#[cfg(test)]
pub(crate) mod alloc_counter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts heap allocations made by the current thread while counting is switched on, and
    /// the bytes they hold (allocated less freed); other test threads are unaffected.
    struct CountingAllocator;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    /// `allocated` more bytes held (negative: freed); an allocation counted when `new`.
    fn note(new: bool, allocated: isize) {
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                if new {
                    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
                }
                let _ = HELD.try_with(|n| n.set(n.get() + allocated));
            }
        });
    }

    fn size(bytes: usize) -> isize {
        isize::try_from(bytes).unwrap_or(isize::MAX)
    }

    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(true, size(layout.size()));
            // SAFETY: forwarded unchanged from our caller, who upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(true, size(layout.size()));
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(true, size(new_size) - size(layout.size()));
            // SAFETY: `ptr` came from this allocator, which hands out `System` memory.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note(false, -size(layout.size()));
            // SAFETY: `ptr` came from this allocator, which hands out `System` memory.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    /// Runs `work` counting: (allocations made, bytes they still hold).
    fn count(work: impl FnOnce()) -> (usize, isize) {
        ALLOCATIONS.with(|n| n.set(0));
        HELD.with(|n| n.set(0));
        COUNTING.with(|on| on.set(true));
        work();
        COUNTING.with(|on| on.set(false));
        (ALLOCATIONS.with(Cell::get), HELD.with(Cell::get))
    }

    pub fn allocations_during(work: impl FnOnce()) -> usize {
        count(work).0
    }

    /// The heap bytes `work` leaves held on this thread (what it allocated and did not free;
    /// negative when it freed more than it allocated).
    pub fn bytes_held_after(work: impl FnOnce()) -> isize {
        count(work).1
    }
}
