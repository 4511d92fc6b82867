//! Transfers (RFC 3515 REFER, RFC 4488 Refer-Sub): the REFERs the peer sends us (202, the
//! implicit subscription's NOTIFYs, the outcome of the call we place for it) and the REFER we
//! send (BlindTransfer) with the NOTIFYs that report its progress.
//!
//! Owns: a call's `Transfer` state and the `Event: refer` subscription.
//! Must not: place the new call itself — the owner does, through `UserAgent::invite` with
//! `refer_of` — or end a call (the transferor's BYE does, in `in_dialog`).

use std::time::Instant;

use rand::Rng;

use super::addressing::{contact_for, destination_for, our_via};
use super::uas::percent_decode;
use super::{CallId, CallState, ClientTx, UaOutput, UserAgent};
use crate::sip::dialog::set_tag;
use crate::sip::message::{Method, NameAddr, Request, Uri};
use crate::sip::transaction::{new_branch, TransactionKey};

/// Seconds a REFER's implicit subscription lasts before its final NOTIFY (RFC 3515 §2.4.4).
const REFER_SUBSCRIPTION_S: u32 = 60;

/// A REFER the peer sent us, accepted.
#[derive(Debug, Clone)]
pub(super) struct Transfer {
    /// NOTIFYs wanted (no `Refer-Sub: false`).
    pub(super) notify: bool,
    /// The REFER's CSeq, for the NOTIFY's `Event: refer;id=`.
    pub(super) id: u32,
    /// The transfer target answered.
    pub(super) succeeded: bool,
}

impl UserAgent {
    /// [`UserAgent::refer`]: our REFER in the call's dialog.
    pub(super) fn send_refer(
        &mut self,
        now: Instant,
        call_id: CallId,
        target: &str,
    ) -> Result<(), String> {
        let branch = new_branch(self.rng.random());
        let call = super::established_call(&mut self.calls, call_id)?;
        if call.referring {
            return Err(format!("call {call_id} is already being transferred"));
        }
        let target = if target.contains(':') {
            Uri::parse(target).map_err(|e| format!("To {target:?}: {e}"))?
        } else {
            let mut uri = call.dialog.remote_uri.uri.clone();
            uri.user = Some(target.to_string());
            uri.password = None;
            uri.params.clear();
            uri.headers = None;
            uri
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut refer, next_hop) = call.dialog.new_request(Method::Refer, &via, &contact);
        refer.headers.push("Refer-To", format!("<{target}>"));
        let mut referred_by = call.dialog.local_uri.clone();
        set_tag(&mut referred_by, None);
        refer.headers.push("Referred-By", referred_by.to_string());
        refer
            .headers
            .push("User-Agent", self.settings.user_agent.clone());
        let destination = destination_for(&next_hop, call.source);
        let key = self
            .transactions
            .send_request(now, refer, destination)
            .map_err(|e| e.to_string())?;
        call.referring = true;
        self.client_tx
            .insert(key, ClientTx::Refer { call: call_id });
        self.drain_transactions(now, None);
        Ok(())
    }

    /// The INVITE of a transfer we carry out has its final answer: tell the transferor.
    pub(super) fn transfer_outcome_for_new_call(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
    ) {
        let refer_of = self
            .calls
            .get(&call_id)
            .and_then(|c| c.outbound.as_ref())
            .and_then(|o| o.refer_of);
        if let Some(old) = refer_of {
            self.transfer_outcome(now, old, status, reason);
        }
    }

    /// The final NOTIFY of an accepted REFER. Success marks the call transferred (its BYE
    /// then ends it with [`EndReason::Transferred`]); failure leaves it as it was.
    pub(super) fn transfer_outcome(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
    ) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(transfer) = call.transfer.as_mut() else {
            return;
        };
        let success = (200..300).contains(&status);
        transfer.succeeded = success;
        if transfer.notify {
            self.send_notify(now, call_id, status, reason, true);
        }
        if !success {
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.transfer = None;
            }
        }
    }

    /// A NOTIFY of the REFER subscription (RFC 3515 §2.4.4) with a message/sipfrag status.
    fn send_notify(
        &mut self,
        now: Instant,
        call_id: CallId,
        status: u16,
        reason: &str,
        last: bool,
    ) {
        let branch = new_branch(self.rng.random());
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(transfer) = call.transfer.clone() else {
            return;
        };
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut notify, next_hop) = call.dialog.new_request(Method::Notify, &via, &contact);
        if transfer.id > 0 {
            notify
                .headers
                .push("Event", format!("refer;id={}", transfer.id));
        } else {
            notify.headers.push("Event", "refer");
        }
        notify.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource".to_string()
            } else {
                format!("active;expires={REFER_SUBSCRIPTION_S}")
            },
        );
        notify
            .headers
            .push("Content-Type", "message/sipfrag;version=2.0");
        notify
            .headers
            .push("User-Agent", self.settings.user_agent.clone());
        notify.body = format!("SIP/2.0 {status} {reason}\r\n").into_bytes();
        let destination = destination_for(&next_hop, call.source);
        if let Err(e) = self.transactions.send_request(now, notify, destination) {
            tracing::warn!(call = call_id, error = %e, "cannot send NOTIFY");
        }
        self.drain_transactions(now, None);
    }

    /// REFER on an established call (RFC 3515): 202, NOTIFY "100 Trying", and the owner is
    /// asked to place the call.
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let call = &self.calls[&call_id];
        if call.state != CallState::Confirmed {
            self.respond_simple(now, &key, &request, 403, "Forbidden - call not established");
            return;
        }
        if call.transfer.is_some() {
            // Overlapping REFERs are refused, as PBX gateways do.
            self.respond_simple(now, &key, &request, 491, "Request Pending");
            return;
        }
        let refer_to: Vec<&str> = request.headers.get_all("Refer-To").collect();
        let target = match refer_to.as_slice() {
            [one] => NameAddr::parse(one).map_err(|e| e.to_string()),
            _ => Err("exactly one Refer-To is required".to_string()),
        };
        let mut target = match target {
            Ok(t) => t.uri,
            Err(e) => {
                let reason = format!("Bad Request - Refer-To: {e}");
                self.respond_simple(now, &key, &request, 400, &reason);
                return;
            }
        };
        let headers = refer_to_headers(target.headers.take().as_deref());
        let notify = !request
            .headers
            .get("Refer-Sub")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let referred_by = request
            .headers
            .get("Referred-By")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let mut by = call.dialog.remote_uri.clone();
                set_tag(&mut by, None);
                by.to_string()
            });
        let id = request.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let mut response = self.base_response(&request, 202, "Accepted");
        if !notify {
            response.headers.push("Refer-Sub", "false");
        }
        self.respond(now, &key, response);
        let call = self.calls.get_mut(&call_id).expect("checked above");
        call.transfer = Some(Transfer {
            notify,
            id,
            succeeded: false,
        });
        if notify {
            self.send_notify(now, call_id, 100, "Trying", false);
        }
        let service = self.calls[&call_id].service;
        self.outputs.push_back(UaOutput::TransferRequested {
            call: call_id,
            target,
            headers,
            referred_by,
            service,
        });
    }

    /// NOTIFY about our REFER (RFC 3515 §2.4.5): the sipfrag status line is the progress.
    pub(super) fn on_notify(
        &mut self,
        now: Instant,
        key: TransactionKey,
        call_id: CallId,
        request: Request,
    ) {
        let event = request.headers.get("Event").unwrap_or_default();
        let is_refer = event
            .split(';')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("refer"));
        if !is_refer || !self.calls[&call_id].referring {
            // RFC 6665 §4.1.3: a NOTIFY for no subscription of ours.
            self.respond_simple(now, &key, &request, 481, "Subscription Does Not Exist");
            return;
        }
        let status = std::str::from_utf8(&request.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|line| line.strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let Some(status) = status else {
            self.respond_simple(
                now,
                &key,
                &request,
                400,
                "Bad Request - no sipfrag status line",
            );
            return;
        };
        self.respond_simple(now, &key, &request, 200, "OK");
        let terminated = request
            .headers
            .get("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let done = status >= 200 || terminated;
        if done {
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.referring = false;
            }
        }
        self.outputs.push_back(UaOutput::ReferProgress {
            call: call_id,
            status,
            done,
        });
    }
}

/// Headers carried in a Refer-To URI (`?Replaces=...&...`) that the INVITE must carry; only
/// Replaces is taken (RFC 3515 §2.1 lets us ignore the others).
fn refer_to_headers(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    raw.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.eq_ignore_ascii_case("replaces"))
        .map(|(_, value)| ("Replaces".to_string(), percent_decode(value)))
        .collect()
}
