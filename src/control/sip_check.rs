//! What the SIP surface owes the callers and the trunk, checked message by message (RFC 3261
//! §17): every request they send gets one final response — retransmitted the same, never
//! another, never a provisional after it — and every final response they give one of our
//! INVITEs is acknowledged (the 2xx by an ACK of the dialog, the others by the transaction's
//! ACK). The random scenarios' leak check sees what the core still holds; this sees a caller
//! or a trunk left waiting, or told two different things about one request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sip::message::SipMessage;

/// A transaction as the other side names it: its Via branch and its CSeq method (a CANCEL
/// shares its INVITE's branch).
type Key = (String, String);

/// The requests sent to the core and the final responses sent for our INVITEs, with what
/// came back.
#[derive(Debug, Default)]
pub(super) struct SipAnswers {
    /// Each request sent to the core (ACKs aside): its first line, and the final status the
    /// core gave it, once it has, with the earliest it can have been sent.
    requests: HashMap<Key, (String, Option<(u16, Instant)>)>,
    /// Final responses sent to our INVITEs: (Call-ID, CSeq number) → the status, until the
    /// core's ACK.
    unacknowledged: HashMap<(String, u32), u16>,
    /// Our INVITEs (Call-ID, CSeq number): the earliest the core can have sent each.
    invites: HashMap<(String, u32), Instant>,
}

/// How long an INVITE client transaction waits for its final response (RFC 3261 Timer B,
/// 64·T1): a non-2xx that comes later has no transaction to acknowledge it, and is dropped
/// (§18.1.2); a 2xx is acknowledged (and the session it starts ended) for 64·T1 more, while
/// the UA remembers the INVITE it gave up (§13.2.2.4).
const TIMER_B: Duration = Duration::from_secs(32);

fn branch(message: &SipMessage) -> Option<String> {
    let via = message.headers().get("Via")?;
    let branch = via
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))?;
    Some(
        branch
            .split(',')
            .next()
            .unwrap_or(branch)
            .trim()
            .to_string(),
    )
}

fn cseq(message: &SipMessage) -> Option<(u32, String)> {
    let mut cseq = message.headers().get("CSeq")?.split_whitespace();
    let number = cseq.next()?.parse().ok()?;
    Some((number, cseq.next()?.to_string()))
}

impl SipAnswers {
    /// A message a caller or the trunk sends to the core at `now`.
    pub(super) fn sent(&mut self, message: &SipMessage, now: Instant) -> Result<(), String> {
        let (Some(branch), Some((number, method))) = (branch(message), cseq(message)) else {
            return Err(format!(
                "the scenario sent a message without a branch or CSeq: {message:?}"
            ));
        };
        match message {
            SipMessage::Request(request) if request.method.as_str() == "ACK" => {}
            SipMessage::Request(request) => {
                // The same request again is a retransmission, answered as the first was —
                // unless it comes after the server transaction is gone (64·T1 after its final
                // response): then it is a new request.
                let line = format!("{} ({number} {method})", request.method.as_str());
                let entry = self
                    .requests
                    .entry((branch, method))
                    .or_insert((line, None));
                if entry.1.is_some_and(|(_, at)| now >= at + TIMER_B) {
                    entry.1 = None;
                }
            }
            SipMessage::Response(response) if method == "INVITE" && response.status >= 200 => {
                let call_id = message.headers().get("Call-ID").unwrap_or_default();
                let key = (call_id.to_string(), number);
                let within =
                    |span: Duration| self.invites.get(&key).is_some_and(|at| now < *at + span);
                let owed = if response.status < 300 {
                    within(2 * TIMER_B)
                } else {
                    within(TIMER_B)
                };
                if owed {
                    self.unacknowledged.insert(key, response.status);
                }
            }
            SipMessage::Response(_) => {}
        }
        Ok(())
    }

    /// A message the core sent to a caller or the trunk, no earlier than `since`.
    pub(super) fn received(&mut self, message: &SipMessage, since: Instant) -> Result<(), String> {
        let (Some(branch), Some((number, method))) = (branch(message), cseq(message)) else {
            return Err(format!(
                "the core sent a message without a branch or CSeq: {message:?}"
            ));
        };
        match message {
            SipMessage::Request(request) if request.method.as_str() == "ACK" => {
                let call_id = message.headers().get("Call-ID").unwrap_or_default();
                self.unacknowledged.remove(&(call_id.to_string(), number));
            }
            SipMessage::Request(request) if request.method.as_str() == "INVITE" => {
                let call_id = message.headers().get("Call-ID").unwrap_or_default();
                self.invites
                    .entry((call_id.to_string(), number))
                    .or_insert(since);
            }
            SipMessage::Request(_) => {}
            SipMessage::Response(response) => {
                let Some((line, last)) = self.requests.get_mut(&(branch, method)) else {
                    // A response to a request the scenario never sent: none is expected
                    // (requests the scenario sends are all recorded).
                    return Err(format!(
                        "the core answered a request nobody sent: {} ({number})",
                        response.status
                    ));
                };
                match (*last, response.status) {
                    (None, s) if s >= 200 => *last = Some((s, since)),
                    (None, _) => {}
                    (Some((first, _)), s) if s == first => {}
                    (Some((first, _)), s) => {
                        return Err(format!(
                            "the core answered {line} {first}, then {s} (RFC 3261 §17.2: one \
                             final response, retransmitted the same)"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Once every deadline has passed: every request answered finally, every final response
    /// to our INVITEs acknowledged.
    pub(super) fn all_answered(&self) -> Result<(), String> {
        let mut waiting: Vec<&str> = self
            .requests
            .values()
            .filter(|(_, status)| status.is_none())
            .map(|(line, _)| line.as_str())
            .collect();
        waiting.sort_unstable();
        if !waiting.is_empty() {
            return Err(format!(
                "requests the core never answered finally: {waiting:?}"
            ));
        }
        let mut unacked: Vec<String> = self
            .unacknowledged
            .iter()
            .map(|((call_id, number), status)| format!("{status} to INVITE {number} of {call_id}"))
            .collect();
        unacked.sort_unstable();
        if !unacked.is_empty() {
            return Err(format!(
                "final responses the core never acknowledged: {unacked:?}"
            ));
        }
        Ok(())
    }
}
