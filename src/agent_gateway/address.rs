//! Who a request names: agent ids, dialable phone numbers, and conference participants.
//!
//! Owns: what makes a string one of these — an agent id is 101..=999999 in canonical decimal;
//! a phone number is 1..=24 characters of digits, `*` and `#` with an optional leading `+`
//! (it ends up in a SIP Request-URI towards the trunk, so nothing else is let through); a
//! participant is an `addressType` (6 phone, 9 agent) with an address of that kind.
//! Must not: know JSON field names or retcodes. `requests` names the field and maps
//! [`AddressError`] to `000-002`; the path's `{agentid}` is parsed here by the listener.
//!
//! Phone numbers are personal data: [`AddressError`] never repeats the offending value.

use std::fmt;

/// An agent's work number (the vendor's `agentid` / `workNo`), 101..=999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(u32);

impl AgentId {
    /// The smallest agent id.
    pub const MIN: u32 = 101;
    /// The largest agent id (2025 docs; older ones stop at 59999).
    pub const MAX: u32 = 999_999;

    /// The agent id `n`, if in range.
    pub fn new(n: i64) -> Result<Self, AddressError> {
        if n < i64::from(Self::MIN) || n > i64::from(Self::MAX) {
            return Err(AddressError::NotAgentId);
        }
        let n = u32::try_from(n).expect("range-checked against AgentId::MAX");
        Ok(AgentId(n))
    }

    /// Parses the decimal text of an agent id (a URL segment, `workNo`, an address of type 9).
    ///
    /// Leading zeros and signs are refused so that one agent has one spelling.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let canonical = !text.is_empty()
            && text.len() <= 6
            && text.bytes().all(|b| b.is_ascii_digit())
            && !text.starts_with('0');
        if !canonical {
            return Err(AddressError::NotAgentId);
        }
        let n: i64 = text.parse().expect("at most six ASCII digits fit an i64");
        AgentId::new(n)
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A number callbridge can dial through a trunk: 1..=24 of `0-9 * #`, optional leading `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Longest number the vendor accepts (`phonenum`, `address`, `confCallerNo`, `caller`).
    pub const MAX_CHARS: usize = 24;

    /// Parses a phone number.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(AddressError::TooLong {
                max: Self::MAX_CHARS,
            });
        }
        let digits = text.strip_prefix('+').unwrap_or(text);
        let dialable = !digits.is_empty()
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if !dialable {
            return Err(AddressError::NotDialable);
        }
        Ok(PhoneNumber(text.to_owned()))
    }

    /// The number as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The vendor's `addressType` / `participantType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// `6`: a phone number, called through the trunk.
    Phone,
    /// `9`: another signed-in agent, whose own phone is called once it answers.
    Agent,
}

impl AddressType {
    /// The address type for the vendor's code, if it is 6 or 9.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            6 => Some(AddressType::Phone),
            9 => Some(AddressType::Agent),
            _ => None,
        }
    }

    /// The vendor's code: 6 or 9.
    pub fn code(self) -> u8 {
        match self {
            AddressType::Phone => 6,
            AddressType::Agent => 9,
        }
    }
}

/// A conference participant as the agentconf interfaces address it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Participant {
    /// `addressType` 6.
    Phone(PhoneNumber),
    /// `addressType` 9.
    Agent(AgentId),
}

impl Participant {
    /// The participant for `address_type` (6 or 9) and `address`.
    pub fn parse(address_type: i64, address: &str) -> Result<Self, AddressError> {
        match AddressType::from_code(address_type) {
            Some(AddressType::Phone) => PhoneNumber::parse(address).map(Participant::Phone),
            Some(AddressType::Agent) => AgentId::parse(address).map(Participant::Agent),
            None => Err(AddressError::UnknownAddressType),
        }
    }

    /// 6 or 9.
    pub fn address_type(&self) -> AddressType {
        match self {
            Participant::Phone(_) => AddressType::Phone,
            Participant::Agent(_) => AddressType::Agent,
        }
    }

    /// The address as the wire spells it (`participant` in events).
    pub fn address(&self) -> String {
        match self {
            Participant::Phone(number) => number.as_str().to_owned(),
            Participant::Agent(agent) => agent.to_string(),
        }
    }
}

/// Why a string is not the address it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not an agent id in canonical decimal within 101..=999999.
    NotAgentId,
    /// An empty phone number.
    Empty,
    /// Longer than `max` characters.
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character other than digits, `*`, `#` and a leading `+`.
    NotDialable,
    /// An `addressType` other than 6 and 9.
    UnknownAddressType,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::NotAgentId => write!(
                f,
                "must be an agent id from {} to {}",
                AgentId::MIN,
                AgentId::MAX
            ),
            AddressError::Empty => f.write_str("must not be empty"),
            AddressError::TooLong { max } => write!(f, "must be at most {max} characters"),
            AddressError::NotDialable => {
                f.write_str("may contain only digits, '*', '#' and a leading '+'")
            }
            AddressError::UnknownAddressType => {
                f.write_str("must be 6 (phone number) or 9 (agent id)")
            }
        }
    }
}

impl std::error::Error for AddressError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_range_is_101_to_999999() {
        assert_eq!(AgentId::parse("101").map(AgentId::get), Ok(101));
        assert_eq!(AgentId::parse("999999").map(AgentId::get), Ok(999_999));
        assert_eq!(AgentId::new(2001).map(AgentId::get), Ok(2001));
        for bad in [
            "100", "1000000", "0", "", "-101", "+101", "0101", "10a", " 101", "1e3",
        ] {
            assert_eq!(
                AgentId::parse(bad),
                Err(AddressError::NotAgentId),
                "{bad:?}"
            );
        }
        assert_eq!(AgentId::new(100), Err(AddressError::NotAgentId));
        assert_eq!(AgentId::new(1_000_000), Err(AddressError::NotAgentId));
        assert_eq!(AgentId::new(-5), Err(AddressError::NotAgentId));
        assert_eq!(
            AgentId::parse("6001").map(|a| a.to_string()),
            Ok("6001".into())
        );
    }

    #[test]
    fn phone_numbers_are_dialable_and_short() {
        for good in [
            "6001",
            "+4930123456",
            "*21#",
            "1",
            "123456789012345678901234",
        ] {
            assert_eq!(
                PhoneNumber::parse(good).map(|p| p.to_string()),
                Ok(good.into())
            );
        }
        assert_eq!(PhoneNumber::parse(""), Err(AddressError::Empty));
        assert_eq!(
            PhoneNumber::parse("1234567890123456789012345"),
            Err(AddressError::TooLong { max: 24 })
        );
        for bad in [
            "+",
            "60 01",
            "sip:6001@pbx",
            "6001;user=phone",
            "abc",
            "++1",
            "1+2",
        ] {
            assert_eq!(
                PhoneNumber::parse(bad),
                Err(AddressError::NotDialable),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn participants_follow_their_address_type() {
        let phone = Participant::parse(6, "88887946").expect("a phone participant");
        assert_eq!(phone.address_type(), AddressType::Phone);
        assert_eq!(phone.address(), "88887946");
        let agent = Participant::parse(9, "2001").expect("an agent participant");
        assert_eq!(agent.address_type().code(), 9);
        assert_eq!(agent.address(), "2001");
        assert_eq!(Participant::parse(9, "100"), Err(AddressError::NotAgentId));
        assert_eq!(Participant::parse(9, "abc"), Err(AddressError::NotAgentId));
        assert_eq!(
            Participant::parse(7, "2001"),
            Err(AddressError::UnknownAddressType)
        );
        assert_eq!(
            AddressError::UnknownAddressType.to_string(),
            "must be 6 (phone number) or 9 (agent id)"
        );
    }
}
