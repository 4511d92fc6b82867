//! The process heap: jemalloc serves Rust's allocations (the `jemalloc` feature, on by
//! default; `main` installs it), glibc's malloc the C libraries' (SQLite, libopus). Both keep
//! freed pages for reuse; this hands them back after a burst and reads what each holds.
//!
//! Owns: the calls into both allocators' control interfaces (`mallctl`, `malloc_trim`,
//! `mallinfo2`).
//! Must not: run per request: purging and reading statistics walk every arena.

/// What the heap holds, both allocators summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapFigures {
    /// Bytes handed out and not freed: live data.
    pub in_use: u64,
    /// Bytes freed and still held: fragmentation, pages kept for reuse (and jemalloc's own
    /// metadata).
    pub free: u64,
}

/// Hands the heap's free pages back to the kernel: jemalloc's and glibc's. An error names the
/// jemalloc control that failed; glibc's trim cannot fail.
pub fn release_free_memory() -> Result<(), String> {
    // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0)
    };
    #[cfg(feature = "jemalloc")]
    jemalloc::purge()?;
    Ok(())
}

/// The two allocators' figures; None when neither can say (not glibc, no jemalloc).
pub fn figures() -> Option<HeapFigures> {
    let parts = [glibc_figures(), jemalloc_figures()];
    parts.into_iter().flatten().reduce(|a, b| HeapFigures {
        in_use: a.in_use + b.in_use,
        free: a.free + b.free,
    })
}

/// glibc's arenas: chunks in use plus mmapped blocks, and the free chunks they keep.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_figures() -> Option<HeapFigures> {
    // SAFETY: mallinfo2 only reads the allocator's statistics (it takes each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    Some(HeapFigures {
        in_use: (info.uordblks + info.hblkhd) as u64,
        free: info.fordblks as u64,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_figures() -> Option<HeapFigures> {
    None
}

#[cfg(feature = "jemalloc")]
fn jemalloc_figures() -> Option<HeapFigures> {
    jemalloc::figures()
}

#[cfg(not(feature = "jemalloc"))]
fn jemalloc_figures() -> Option<HeapFigures> {
    None
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    use std::ffi::CStr;
    use std::ptr;

    use super::HeapFigures;

    /// Every arena's unused dirty pages back to the kernel now, rather than over jemalloc's
    /// 10 s decay, which only advances while the process allocates.
    pub(super) fn purge() -> Result<(), String> {
        // "arena.<MALLCTL_ARENAS_ALL>.purge": 4096 in jemalloc 5. A void control.
        let name = c"arena.4096.purge";
        // SAFETY: a NUL-terminated name; a void control takes no old or new value.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        };
        check(name, rc)
    }

    /// `stats.allocated` (bytes in live allocations) and `stats.resident` (bytes in pages the
    /// allocator holds resident: live data, free space, dirty pages, metadata), refreshed by
    /// advancing the statistics epoch first.
    pub(super) fn figures() -> Option<HeapFigures> {
        let mut epoch: u64 = 1;
        // SAFETY: "epoch" takes a u64 written from a live value of its exact size.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                (&mut epoch as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        check(c"epoch", rc).ok()?;
        let allocated = read_size(c"stats.allocated")?;
        let resident = read_size(c"stats.resident")?;
        Some(HeapFigures {
            in_use: allocated as u64,
            free: resident.saturating_sub(allocated) as u64,
        })
    }

    fn read_size(name: &CStr) -> Option<usize> {
        let mut value: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: a size_t control read into a live usize whose size is passed.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut usize).cast(),
                &mut len,
                ptr::null_mut(),
                0,
            )
        };
        check(name, rc).ok().map(|()| value)
    }

    fn check(name: &CStr, rc: libc::c_int) -> Result<(), String> {
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "jemalloc {}: {}",
                name.to_string_lossy(),
                std::io::Error::from_raw_os_error(rc)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pages_are_handed_back_by_both_allocators() {
        // A burst's worth freed first, so there is something to purge.
        let burst: Vec<Vec<u8>> = (0..1_000).map(|_| vec![1u8; 4096]).collect();
        drop(burst);
        assert_eq!(release_free_memory(), Ok(()));
    }

    #[test]
    fn glibc_figures_count_what_the_c_libraries_allocate() {
        // Other tests allocate and free on glibc's heap meanwhile (unit tests run on the
        // system allocator): a block far larger than their churn.
        const BLOCK: usize = 64 << 20;
        let before = glibc_figures().expect("glibc reports");
        // Through libc's malloc, as SQLite and libopus allocate.
        // SAFETY: a plain allocation, written and freed below.
        let block = unsafe { libc::malloc(BLOCK) };
        assert!(!block.is_null());
        // SAFETY: BLOCK bytes just allocated.
        unsafe { std::ptr::write_bytes(block.cast::<u8>(), 1, BLOCK) };
        let with = glibc_figures().expect("glibc reports");
        let total = figures().expect("figures");
        // SAFETY: the block allocated above, freed once.
        unsafe { libc::free(block) };
        assert!(
            with.in_use >= before.in_use + (BLOCK as u64) * 3 / 4,
            "{before:?} → {with:?}"
        );
        assert!(total.in_use >= (BLOCK as u64) * 3 / 4, "{total:?}");
    }

    #[cfg(feature = "jemalloc")]
    #[test]
    fn jemalloc_reports_what_it_holds() {
        // Unit tests run on the system allocator; jemalloc's figures are its own allocations.
        let block = unsafe { tikv_jemalloc_sys::malloc(4 << 20) };
        assert!(!block.is_null());
        let figures = jemalloc::figures().expect("stats are built in");
        // SAFETY: the block allocated above, freed once.
        unsafe { tikv_jemalloc_sys::free(block) };
        assert!(figures.in_use >= 4 << 20, "{figures:?}");
    }
}
