//! What the SIP surface owes the callers and the trunk, checked message by message (RFC 3261
//! §17): every request they send gets one final response — retransmitted the same, never
//! another, never a provisional after it — and every final response they give one of our
//! INVITEs is acknowledged (the 2xx by an ACK of the dialog, the others by the transaction's
//! ACK), and once a dialog's session is over — our BYE sent, or theirs answered 2xx — the core
//! sends nothing more in it but ACKs and NOTIFYs (RFC 5057: a REFER's subscription outlives
//! the INVITE usage). The random scenarios' leak check sees what the core still holds; this
//! sees a caller or a trunk left waiting, told two different things about one request, or
//! asked something in a call that is over.

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
    /// Until when another 2xx to each of our INVITEs that had one (a retransmission, a
    /// second fork's) is owed an ACK: 64·T1 after the first (RFC 6026's Accepted state,
    /// Timer M), or while the UA remembers an INVITE it gave up.
    accepted: HashMap<(String, u32), Instant>,
    /// Dialogs whose session is over: the last CSeq number the core had used in each then.
    ended: HashMap<DialogKey, u32>,
    /// The highest CSeq number the core has used in each dialog.
    our_seq: HashMap<DialogKey, u32>,
}

/// A dialog: its Call-ID and its two tags, in order (the same from either side).
type DialogKey = (String, String, String);

/// The message's dialog, its tags read by our own parser.
fn dialog(message: &SipMessage) -> DialogKey {
    let h = message.headers();
    let tag = |tag: Option<&str>| tag.unwrap_or_default().to_string();
    let (a, b) = (tag(h.from_tag()), tag(h.to_tag()));
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    (h.call_id().unwrap_or_default().to_string(), a, b)
}

/// How long an INVITE client transaction waits for its final response (RFC 3261 Timer B,
/// 64·T1): a non-2xx that comes later has no transaction to acknowledge it, and is dropped
/// (§18.1.2); a 2xx is acknowledged (and the session it starts ended) for 64·T1 more, while
/// the UA remembers the INVITE it gave up (§13.2.2.4).
const TIMER_B: Duration = Duration::from_secs(32);

/// The message's top Via branch, read by our own parser.
fn branch(message: &SipMessage) -> Option<String> {
    let via = message.headers().top_via().ok()?;
    via.branch().map(str::to_string)
}

/// The message's CSeq: its number and method.
fn cseq(message: &SipMessage) -> Option<(u32, String)> {
    let cseq = message.headers().cseq().ok()?;
    Some((cseq.seq, cseq.method.as_str().to_string()))
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
                let owed = match self.accepted.get(&key) {
                    _ if response.status >= 300 => within(TIMER_B),
                    Some(until) => now < *until,
                    None if within(2 * TIMER_B) => {
                        // Answered in time: 64·T1 of the Accepted state from now; answered
                        // after Timer B: what is left of the 64·T1 the UA remembers it.
                        let until = if within(TIMER_B) {
                            now + TIMER_B
                        } else {
                            self.invites[&key] + 2 * TIMER_B
                        };
                        self.accepted.insert(key.clone(), until);
                        true
                    }
                    None => false,
                };
                if owed {
                    self.unacknowledged.insert(key, response.status);
                }
            }
            SipMessage::Response(_) => {}
        }
        Ok(())
    }

    /// Whether the core has answered the request `message` finally.
    pub(super) fn answered_finally(&self, message: &SipMessage) -> bool {
        let (Some(branch), Some((_, method))) = (branch(message), cseq(message)) else {
            return false;
        };
        self.requests
            .get(&(branch, method))
            .is_some_and(|(_, last)| last.is_some())
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
            SipMessage::Request(request) => {
                // A new request (not a retransmission, nor the ACK of an earlier INVITE) in a
                // dialog whose session is over.
                let method = request.method.as_str();
                let key = dialog(message);
                if let Some(&last) = self.ended.get(&key) {
                    if number > last && method != "NOTIFY" && method != "ACK" {
                        return Err(format!(
                            "the core sent {method} ({number}) in {key:?}, whose session ended \
                             at its CSeq {last}"
                        ));
                    }
                }
                let seq = self.our_seq.entry(key.clone()).or_insert(number);
                *seq = (*seq).max(number);
                if method == "BYE" {
                    self.ended.entry(key).or_insert(number);
                } else if method == "INVITE" {
                    let call_id = message.headers().get("Call-ID").unwrap_or_default();
                    self.invites
                        .entry((call_id.to_string(), number))
                        .or_insert(since);
                }
            }
            SipMessage::Response(response) => {
                if method == "BYE" && (200..300).contains(&response.status) {
                    let key = dialog(message);
                    let last = self.our_seq.get(&key).copied().unwrap_or(0);
                    self.ended.entry(key).or_insert(last);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::harness::sip;

    fn message(start: &str, call_id: &str, from_tag: &str, to_tag: &str, cseq: &str) -> SipMessage {
        sip(&format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-{cseq_branch}\r\n\
             From: <sip:a@127.0.0.2>;tag={from_tag}\r\nTo: <sip:b@127.0.0.1>{to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n",
            cseq_branch = cseq.replace(' ', "-"),
            to = if to_tag.is_empty() {
                String::new()
            } else {
                format!(";tag={to_tag}")
            },
        ))
    }

    /// The check fails where it should: a second, different final response; a request never
    /// answered; a 2xx to our INVITE never ACKed; a request of ours after the session's BYE.
    #[test]
    fn the_sip_check_finds_what_it_is_for() {
        let now = Instant::now();
        let bye = message("BYE sip:b@127.0.0.1 SIP/2.0", "c1", "p", "us", "2 BYE");
        let ok = message("SIP/2.0 200 OK", "c1", "p", "us", "2 BYE");
        let gone = message("SIP/2.0 481 Gone", "c1", "p", "us", "2 BYE");
        let mut check = SipAnswers::default();
        check.sent(&bye, now).unwrap();
        assert!(
            check.all_answered().is_err(),
            "the BYE waits for its answer"
        );
        check.received(&ok, now).unwrap();
        check.received(&ok, now).unwrap();
        assert!(check.received(&gone, now).is_err(), "200, then 481");
        check.all_answered().unwrap();
        // The session is over: a new request of ours in the dialog is one too many.
        let reinvite = message(
            "INVITE sip:a@127.0.0.2 SIP/2.0",
            "c1",
            "us",
            "p",
            "7 INVITE",
        );
        assert!(check.received(&reinvite, now).is_err());

        // Our INVITE's 2xx needs our ACK.
        let mut check = SipAnswers::default();
        let invite = message("INVITE sip:b@127.0.0.3 SIP/2.0", "c2", "us", "", "1 INVITE");
        check.received(&invite, now).unwrap();
        let answer = message("SIP/2.0 200 OK", "c2", "us", "t", "1 INVITE");
        check.sent(&answer, now).unwrap();
        assert!(check.all_answered().is_err(), "no ACK yet");
        let ack = message("ACK sip:b@127.0.0.3 SIP/2.0", "c2", "us", "t", "1 ACK");
        check.received(&ack, now).unwrap();
        check.all_answered().unwrap();
    }
}
