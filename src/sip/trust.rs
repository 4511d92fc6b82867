//! Who may start calls: the source addresses of the configured trunks (`[[trunk]] allow`).
//!
//! Owns: parsing address blocks (`10.0.0.5`, `192.0.2.0/24`, `2001:db8::/32`) and deciding
//! whether a source is inside one. IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`, from dual-stack
//! sockets) are judged as IPv4.
//! Must not: decide what happens to an untrusted request — the user agent does
//! ([`Untrusted`]).

use std::fmt;
use std::net::IpAddr;

use crate::store::RecordPolicy;

/// An address block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

/// What happens to an out-of-dialog request from outside every trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Untrusted {
    /// 403 Forbidden.
    #[default]
    Reject,
    /// No answer at all: a scanner learns nothing.
    Ignore,
}

/// A block that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError(pub String);

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IpBlock {
    /// `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Result<IpBlock, BlockError> {
        let bad = |why: &str| BlockError(format!("{text:?}: {why}"));
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| bad("not an IP address"))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| bad("prefix length out of range"))?,
        };
        Ok(IpBlock { network, prefix })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who may send out-of-dialog requests: None = anyone (no trunks configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub allowed: Option<Vec<IpBlock>>,
    pub untrusted: Untrusted,
    /// Each trunk's source blocks, to tell which trunk a call came from.
    pub trunks: Vec<TrunkSource>,
}

/// A `[[trunk]]` as a source of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSource {
    pub name: String,
    pub blocks: Vec<IpBlock>,
    /// Its calls' `record` policy (a route's own wins).
    pub record: RecordPolicy,
}

impl Trust {
    /// The first trunk with a block holding `ip`.
    pub fn trunk_of(&self, ip: IpAddr) -> Option<&TrunkSource> {
        self.trunks
            .iter()
            .find(|t| t.blocks.iter().any(|b| b.contains(ip)))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|blocks| blocks.iter().any(|b| b.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_and_nothing_else() {
        let net = IpBlock::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("192.0.2.77")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(
            net.contains(ip("::ffff:192.0.2.9")),
            "IPv4-mapped counts as IPv4"
        );
        let host = IpBlock::parse("10.0.0.5").unwrap();
        assert!(host.contains(ip("10.0.0.5")) && !host.contains(ip("10.0.0.6")));
        let v6 = IpBlock::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::2")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.1")));
        let all = IpBlock::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(IpBlock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_trunks_trust_everyone() {
        assert!(Trust::default().allows(ip("203.0.113.1")));
        let trust = Trust {
            allowed: Some(vec![IpBlock::parse("127.0.0.0/8").unwrap()]),
            untrusted: Untrusted::Ignore,
            trunks: Vec::new(),
        };
        assert!(trust.allows(ip("127.0.0.9")));
        assert!(!trust.allows(ip("203.0.113.1")));
    }

    #[test]
    fn a_source_names_the_first_trunk_whose_blocks_hold_it() {
        let trunk = |name: &str, block: &str, record| TrunkSource {
            name: name.into(),
            blocks: vec![IpBlock::parse(block).unwrap()],
            record,
        };
        let trust = Trust {
            allowed: None,
            untrusted: Untrusted::Reject,
            trunks: vec![
                trunk("pbx", "10.0.0.5", RecordPolicy::Always),
                trunk("carrier", "10.0.0.0/24", RecordPolicy::OnDemand),
            ],
        };
        let of = |a: &str| trust.trunk_of(ip(a)).map(|t| (t.name.as_str(), t.record));
        assert_eq!(of("10.0.0.5"), Some(("pbx", RecordPolicy::Always)));
        assert_eq!(of("10.0.0.9"), Some(("carrier", RecordPolicy::OnDemand)));
        assert_eq!(of("192.0.2.1"), None);
    }
}
