//! Maps and sets keyed by ids this process hands out itself (connection, call, transaction and
//! timer numbers): hashed with foldhash's fast hasher (seeded per process) instead of std's
//! SipHash. No peer chooses these keys, so SipHash's resistance to chosen-key collisions buys
//! nothing here, and its cost was about 3 % of a call setup's instructions (~146 look-ups a
//! call; `scripts/bench-setup-instructions`). Keys that come from the wire (Call-IDs, tags,
//! branches, room names) stay in std's `HashMap`.

use std::collections::{HashMap, HashSet};

/// The hasher of [`IdMap`] and [`IdSet`].
#[cfg(not(test))]
pub type IdHasher = foldhash::fast::RandomState;

/// In the unit tests a fixed seed: the control core's random scenarios visit its maps in the
/// same order every run, so a failing seed fails again.
#[cfg(test)]
pub type IdHasher = foldhash::fast::FixedState;

/// A `HashMap` keyed by one of our own ids.
pub type IdMap<K, V> = HashMap<K, V, IdHasher>;

/// A `HashSet` of our own ids.
pub type IdSet<K> = HashSet<K, IdHasher>;
