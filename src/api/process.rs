//! The process's own resource use for `/metrics`, under the names of Prometheus's standard
//! process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), so the dashboards and alerts written for any other service
//! work unchanged.
//!
//! Owns: nothing; every scrape reads the kernel's figures afresh (`/proc/self`, the process CPU
//! clock, `getrlimit`). Must not: fail a scrape because one source is unreadable — that series
//! is left out, the rest are served.
//!
//! Hand-written rather than the `procfs` crate: six numbers from three files do not justify a
//! dependency that parses all of `/proc`.

use std::fs;

/// One reading of the process's resource use; `None` where the source could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time of every thread, seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// File descriptors open (sockets included: two per media connection).
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Bytes the allocators have handed out and not had back (jemalloc's `stats.allocated`
    /// plus glibc's `mallinfo2` chunks in use and mmapped blocks). Growth here over a long run
    /// is live data: a leak or a table.
    pub heap_in_use_bytes: Option<u64>,
    /// Bytes freed back to the allocators and kept (jemalloc's resident less allocated, glibc's
    /// free chunks). Growth here with the in-use figure flat is fragmentation: resident memory
    /// the process no longer uses.
    pub heap_free_bytes: Option<u64>,
}

impl ProcessStats {
    /// Reads the current figures.
    pub fn read() -> ProcessStats {
        let page = sysconf(libc::_SC_PAGESIZE);
        let (virtual_bytes, resident_bytes) = fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|text| parse_statm(&text))
            .zip(page)
            .map(|((size, resident), page)| (Some(size * page), Some(resident * page)))
            .unwrap_or_default();
        let start_time_seconds = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| start_ticks(&stat))
            .zip(sysconf(libc::_SC_CLK_TCK).filter(|&hz| hz > 0))
            .zip(
                fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|text| boot_time(&text)),
            )
            .map(|((ticks, hz), boot)| boot as f64 + ticks as f64 / hz as f64);
        let heap = crate::heap::figures();
        ProcessStats {
            cpu_seconds: crate::engine::clock_time(libc::CLOCK_PROCESS_CPUTIME_ID)
                .map(|t| t.as_secs_f64()),
            resident_bytes,
            virtual_bytes,
            open_fds: open_fds(),
            max_fds: crate::engine::soft_file_limit(),
            start_time_seconds,
            heap_in_use_bytes: heap.map(|h| h.in_use),
            heap_free_bytes: heap.map(|h| h.free),
        }
    }

    /// The Prometheus text exposition of the figures that could be read.
    pub fn render(&self, out: &mut String) {
        let series = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
            (
                "callbridge_heap_in_use_bytes",
                "gauge",
                "Bytes allocated and not freed (jemalloc stats.allocated + glibc mallinfo2 in use).",
                self.heap_in_use_bytes.map(|v| v as f64),
            ),
            (
                "callbridge_heap_free_bytes",
                "gauge",
                "Bytes freed and kept by the allocators (jemalloc resident - allocated + glibc free).",
                self.heap_free_bytes.map(|v| v as f64),
            ),
        ];
        for (name, kind, help, value) in series {
            if let Some(value) = value {
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                ));
            }
        }
    }
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok()
}

/// Entries of /proc/self/fd, less the one the listing itself holds open.
fn open_fds() -> Option<u64> {
    let entries = fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// (size, resident) in pages from /proc/self/statm.
fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Field 22 of /proc/self/stat, the start time in clock ticks after boot. The command name
/// (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` begins with field 3 (the state): field 22 is its 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The `btime` line of /proc/stat: the boot time, seconds since the Unix epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_from_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (media (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 35 12 0 0 20 0 \
                    9 0 987654 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 \
                    17 1 0 0 0 0 0";
        assert_eq!(start_ticks(stat), Some(987_654));
        assert_eq!(start_ticks("4242 (truncated) S 1 2"), None);
    }

    #[test]
    fn statm_and_btime_are_read_and_garbage_is_refused() {
        assert_eq!(
            parse_statm("5120 1024 300 10 0 900 0\n"),
            Some((5120, 1024))
        );
        assert_eq!(parse_statm("x 1"), None);
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1763800000\nprocesses 7\n";
        assert_eq!(boot_time(stat), Some(1_763_800_000));
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn this_process_reports_every_figure_and_renders_them() {
        let stats = ProcessStats::read();
        assert!(stats.cpu_seconds.is_some_and(|s| s > 0.0), "{stats:?}");
        assert!(stats.resident_bytes.is_some_and(|b| b > 0), "{stats:?}");
        assert!(
            stats.virtual_bytes.unwrap_or(0) >= stats.resident_bytes.unwrap_or(u64::MAX),
            "{stats:?}"
        );
        assert!(stats.open_fds.is_some_and(|n| n >= 3), "{stats:?}");
        assert!(stats.heap_in_use_bytes.is_some_and(|b| b > 0), "{stats:?}");
        assert!(stats.heap_free_bytes.is_some(), "{stats:?}");
        assert!(stats.max_fds >= stats.open_fds, "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let started = stats.start_time_seconds.expect("start time");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );

        let mut out = String::new();
        stats.render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "callbridge_heap_in_use_bytes",
            "callbridge_heap_free_bytes",
        ] {
            assert!(
                out.contains(&format!("\n{name} ")),
                "{name} missing:\n{out}"
            );
        }
        let mut partial = String::new();
        ProcessStats {
            open_fds: Some(7),
            ..ProcessStats::default()
        }
        .render(&mut partial);
        assert_eq!(
            partial,
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 7\n"
        );
    }
}
