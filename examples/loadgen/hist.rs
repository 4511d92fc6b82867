//! A log-linear histogram of nanosecond values (HDR-style: 512 sub-buckets per power of two,
//! so every recorded value is kept to within 0.2 %; values below 1,024 ns are exact).

const SUB_BITS: u32 = 10;
const HALF: u64 = 1 << (SUB_BITS - 1);
/// Values are clamped below 2^42 ns (73 minutes).
const MAX_VALUE: u64 = (1 << 42) - 1;
const BUCKETS: usize = ((42 - SUB_BITS as usize + 1) << (SUB_BITS - 1)) + HALF as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros();
        let shift = msb - (SUB_BITS - 1);
        ((shift as u64) * HALF + (v >> shift)) as usize
    }
}

/// Midpoint of bucket `i` (the value a percentile reports).
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < (1 << SUB_BITS) {
        i
    } else {
        let shift = i / HALF - 1;
        let mantissa = i - shift * HALF;
        (mantissa << shift) + (1 << shift) / 2
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        let v = v.min(MAX_VALUE);
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Exact maximum recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at percentile `p` (0–100): the smallest bucket holding at least p % of the
    /// values (nearest-rank). None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last && i < BUCKETS);
            last = i;
            let back = value(i);
            assert!(back.abs_diff(v) * 500 <= v.max(500), "{v} -> {back}");
        }
        assert!(index(MAX_VALUE) < BUCKETS);
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v * 1000);
        }
        let p50 = h.percentile(50.0).unwrap();
        assert!(p50.abs_diff(500_000) < 1_000, "{p50}");
        assert_eq!(h.max(), 1_000_000);
        assert_eq!(h.percentile(100.0), Some(1_000_000));
    }
}
