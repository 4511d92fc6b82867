//! Cache hints for the media workers' tick loops: a worker runs hundreds of sessions in a row,
//! each last touched a tick (20 ms) ago and gone from the caches since, so it asks for the
//! memory of the sessions a few places ahead while it runs the current one.
//!
//! Must not: change what any code computes — a prefetch is a hint that never faults and is
//! ignored where the CPU has none (or on other architectures).

/// Asks the CPU to bring `value` into its second-level cache, without waiting for it. One hint
/// per 128 bytes: the second-level cache's adjacent-line prefetcher fetches lines in pairs, and
/// a hint per line stalled on the CPU's queue of outstanding misses (`perf annotate`: a
/// quarter of the worker loop's samples on the hints themselves). Meant for values of a few
/// KB at most.
#[inline]
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let start = (value as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of_val(value)).step_by(128) {
            // SAFETY: `start + offset` is inside `value` (offset below its size), and a
            // prefetch never faults whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
