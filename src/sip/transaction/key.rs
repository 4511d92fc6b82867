//! Matching messages to transactions (RFC 3261 §17.1.3, §17.2.3): the transaction key,
//! RFC 2543 elements' substitute for a branch, and the index from keys to transaction ids.
//!
//! Owns: [`KeyIndex`]; the keys themselves live in their transactions.

use std::hash::BuildHasher;

use super::{Transactions, MAGIC_COOKIE};
use crate::sip::message::{Method, Request};

/// Identifies a transaction.
///
/// Server: (branch, sent-by of the top Via, method with ACK folded into INVITE), §17.2.3.
/// Client: (branch, method), §17.1.3. Requests without an RFC 3261 branch (none, one without
/// the magic cookie, or the bare cookie: RFC 4475 badbranch) get a synthetic branch built from
/// what §17.2.3 compares for RFC 2543 elements: Request-URI, To tag, From tag, Call-ID, CSeq
/// number and the top Via (see `legacy_branch`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// Client and server transactions live in separate namespaces.
    pub(super) role: Role,
    /// Via branch (or the synthetic RFC 2543 substitute).
    pub(super) branch: String,
    /// Lower-cased "host[:port]" of the top Via; empty for client transactions.
    pub(super) sent_by: String,
    /// Method that created the transaction (never ACK).
    pub(super) method: Method,
}

impl TransactionKey {
    /// The Via branch identifying this transaction (synthetic for RFC 2543 requests).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Whether this is an INVITE transaction.
    pub fn is_invite(&self) -> bool {
        self.method == Method::Invite
    }

    /// Whether this is a server transaction (one the TU answers with `send_response`).
    pub fn is_server(&self) -> bool {
        self.role == Role::Server
    }

    /// The method that created the transaction.
    pub fn method(&self) -> &Method {
        &self.method
    }

    pub(super) fn client(branch: &str, method: Method) -> TransactionKey {
        TransactionKey {
            role: Role::Client,
            branch: branch.to_owned(),
            sent_by: String::new(),
            method,
        }
    }

    /// §17.2.3 key of an incoming request; None if it lacks what matching needs (then the
    /// message is malformed and gets dropped).
    pub(super) fn server(request: &Request) -> Option<TransactionKey> {
        Self::server_with_to_tag(request, || request.headers.to_tag())
    }

    /// The key of `request` with the To tag `to_tag` gives, asked for only if the key needs
    /// one: only an RFC 2543 key does, so a request with an RFC 3261 branch (every current
    /// peer's) does not have its To read. The INVITE an RFC 2543 ACK acknowledges had no To
    /// tag (our response added it), so that ACK's INVITE is keyed with none.
    pub(super) fn server_with_to_tag<'a>(
        request: &'a Request,
        to_tag: impl FnOnce() -> Option<&'a str>,
    ) -> Option<TransactionKey> {
        let via = request.headers.top_via_ref().ok()?;
        let branch = match via.branch() {
            Some(branch) if is_rfc3261_branch(branch) => branch.to_owned(),
            _ => legacy_branch(request, to_tag())?,
        };
        // The ACK of a non-2xx is part of the INVITE transaction.
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref other => other.clone(),
        };
        Some(TransactionKey {
            role: Role::Server,
            branch,
            sent_by: via.sent_by(),
            method,
        })
    }
}

/// Which side of the transaction we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Role {
    Client,
    Server,
}

/// Transaction ids by their key, §17.1.3 / §17.2.3 matching: a table of ids hashed by their
/// transaction's key, so each key is stored once, in its transaction (a map from key to id
/// held a copy of each, two strings; INVITE and BYE server transactions outlive their call
/// by the 32 s of Timer L and J). Keys come from the wire (branches), so std's keyed SipHash.
///
/// Each entry keeps its key's hash beside the id. Growing the table re-places every entry by
/// its hash; without it, that read each entry's transaction and hashed its key again — cold
/// memory for every live transaction, a pause of the control thread that grew with the call
/// rate (116 ms re-placing ~115,000 at 2,000 setups/s). A look-up compares the whole hash
/// before it reads a transaction.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    pub(super) ids: hashbrown::HashTable<Entry>,
    hasher: std::hash::RandomState,
}

/// One indexed transaction: its key's hash and its id.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    hash: u64,
    id: u64,
}

impl KeyIndex {
    pub(super) fn hash(&self, key: &TransactionKey) -> u64 {
        self.hasher.hash_one(key)
    }

    pub(super) fn find(&self, key: &TransactionKey, transactions: &Transactions) -> Option<u64> {
        let hash = self.hash(key);
        self.ids
            .find(hash, |entry| {
                entry.hash == hash && transactions.get(&entry.id).is_some_and(|tx| tx.key == *key)
            })
            .map(|entry| entry.id)
    }

    /// Indexes transaction `id`, whose key (hashed by [`KeyIndex::hash`]) no live one has.
    pub(super) fn insert(&mut self, hash: u64, id: u64) {
        self.ids
            .insert_unique(hash, Entry { hash, id }, |entry| entry.hash);
    }

    /// Forgets transaction `id`, whose key is `key` (it may have left `transactions` already).
    pub(super) fn remove(&mut self, key: &TransactionKey, id: u64) {
        if let Ok(entry) = self.ids.find_entry(self.hash(key), |entry| entry.id == id) {
            entry.remove();
        }
    }

    /// Gives back the slack of a burst, as `crate::shrink` does for the other tables.
    pub(super) fn shrink_idle(&mut self) {
        if let Some(capacity) = crate::shrink::idle_capacity(self.ids.len(), self.ids.capacity()) {
            self.ids.shrink_to(capacity, |entry| entry.hash);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A branch an RFC 3261 element made (§8.1.1.7): the magic cookie and something after it.
/// The bare cookie (RFC 4475 badbranch) identifies nothing: such requests are matched as an
/// RFC 2543 element's.
pub(super) fn is_rfc3261_branch(branch: &str) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

/// Substitute branch for requests from RFC 2543 elements (§17.2.3): Request-URI, To tag (the
/// caller's `to_tag`, see [`TransactionKey::server_with_to_tag`]), From tag, Call-ID, CSeq
/// number (not the method: the ACK and CANCEL of an INVITE match it) and the top Via, as
/// received. `rfc2543|` cannot start an RFC 3261 branch.
fn legacy_branch(request: &Request, to_tag: Option<&str>) -> Option<String> {
    let headers = &request.headers;
    let call_id = headers.call_id().ok()?;
    let from = headers.from().ok()?;
    let cseq = headers.cseq().ok()?;
    let via = headers.get("Via")?;
    Some(format!(
        "rfc2543|{}|{}|{}|{call_id}|{}|{via}",
        request.uri,
        to_tag.unwrap_or(""),
        from.tag().unwrap_or(""),
        cseq.seq
    ))
}
