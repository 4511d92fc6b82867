//! Re-INVITEs we send: putting a party on hold and taking it off (RFC 3264 §8.4, RFC 6337
//! §5.3).
//!
//! Owns: our offer with the direction asked for (`sendonly` holds the peer: it stops sending,
//! we may keep sending; `sendrecv` resumes), its client transaction, the ACK of its 2xx
//! (re-sent on 2xx retransmissions) and what the owner is told: `MediaUpdated` with the
//! answer, or `ReinviteFailed` (the session stays as it was, §14.1).
//! Must not: start a second re-INVITE while one is out; the peer's re-INVITE meanwhile gets
//! 491 (glare, §14.2).

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::addressing::{contact_for, destination_for, our_via};
use super::uac::{answer_in, Abandoned};
use super::{CallId, ClientTx, UaOutput, UserAgent};
use crate::sdp::{self, Attribute, Direction, SessionDescription};
use crate::sip::dialog::Dialog;
use crate::sip::message::{Method, Response, SipMessage};
use crate::sip::transaction::{new_branch, Peer, TransactionKey};

/// The dialog a re-INVITE was sent in, as it was then (its CSeq number the re-INVITE's), and
/// the call's peer and local address: the ACK of its 2xx is built from these, so it carries
/// the re-INVITE's number whatever we sent since and goes out after the call has ended too.
#[derive(Debug, Clone)]
pub(super) struct SentIn {
    dialog: Dialog,
    source: Peer,
    local: SocketAddr,
}

impl UserAgent {
    /// Offers `direction` for an established call's media in a re-INVITE (hold:
    /// `Direction::SendOnly`; resume: `Direction::SendRecv`). The answer comes as
    /// `UaOutput::MediaUpdated`, a refusal or a timeout as `UaOutput::ReinviteFailed`.
    pub fn reinvite(
        &mut self,
        now: Instant,
        call_id: CallId,
        direction: Direction,
    ) -> Result<(), String> {
        let branch = new_branch(self.rng.random());
        // Answered, the ACK not in yet: the re-INVITE waits for it (a hold asked for the
        // moment the call is answered).
        if let Some(call) = self.calls.get_mut(&call_id) {
            if call.state == super::CallState::Answered && !call.reinviting {
                call.reinviting = true;
                call.reinvite_after_ack = Some(direction);
                return Ok(());
            }
        }
        let call = super::established_call(&mut self.calls, call_id)?;
        if call.reinviting {
            return Err(format!("call {call_id} has a re-INVITE in progress"));
        }
        let Some(local_rtp) = call.local_rtp else {
            return Err(format!("call {call_id} has no media"));
        };
        let mut version = call.sdp_version;
        version.version += 1;
        let mut offer = sdp::offer(&call.capabilities, local_rtp, version, &call.srtp_keys);
        set_direction(&mut offer, direction);
        let via = our_via(call.source.transport, call.local, &branch);
        let contact = contact_for(call.source.transport, call.local);
        let (mut invite, next_hop) = call.dialog.new_request(Method::Invite, &via, &contact);
        invite.headers.push("Content-Type", "application/sdp");
        invite
            .headers
            .push("User-Agent", self.settings.user_agent.clone());
        invite.body = offer.to_text().into_bytes();
        let destination = destination_for(&next_hop, call.source);
        let sent = Box::new(SentIn {
            dialog: call.dialog.clone(),
            source: call.source,
            local: call.local,
        });
        let key = self
            .transactions
            .send_request(now, invite, destination)
            .map_err(|e| e.to_string())?;
        // Nobody rings for a re-INVITE: a peer that sends a provisional and then nothing
        // gets the 64*T1 of Timer B all the same (then ReinviteFailed 408).
        self.transactions.bound_wait(now, &key);
        // §8 of RFC 3264: every new offer has a new version, whatever its fate.
        call.sdp_version = version;
        call.reinviting = true;
        self.client_tx.insert(
            key,
            ClientTx::Reinvite {
                call: call_id,
                offer: Box::new(offer),
                sent,
                ack: None,
            },
        );
        self.drain_transactions(now, None);
        Ok(())
    }

    /// A response to our re-INVITE.
    pub(super) fn on_reinvite_response(
        &mut self,
        key: TransactionKey,
        call_id: CallId,
        offer: &SessionDescription,
        response: Response,
    ) {
        if response.status < 200 {
            return;
        }
        if response.status >= 300 {
            self.client_tx.remove(&key);
            self.reinvite_failed(call_id, response.status);
            return;
        }
        self.send_reinvite_ack(&key, &response);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.reinviting = false;
        // §12.2.1.2: a target refresh's 2xx replaces the remote target, usable answer or not.
        call.dialog.refresh_target(&response.headers);
        match answer_in(&response, offer) {
            Ok(media) => {
                call.local_sdp = Some(offer.clone());
                self.outputs.push_back(UaOutput::MediaUpdated {
                    call: call_id,
                    media,
                });
            }
            Err(e) => {
                // The ACK went; the session stays as it was (RFC 6337 §3.1.3 would offer
                // again: the owner decides).
                tracing::warn!(call = call_id, error = %e, "answer to our re-INVITE unusable");
                self.outputs.push_back(UaOutput::ReinviteFailed {
                    call: call_id,
                    status: 488,
                });
            }
        }
    }

    /// Our re-INVITE got no final answer in time (Timer B). A 2xx that still comes gets its
    /// ACK for 64*T1 more (`UserAgent::on_stray_response`): else the peer, its 2xx never
    /// acknowledged, would end the whole call (§13.3.1.4). The call stays as it was (the
    /// owner has `ReinviteFailed`); the peer's side of the exchange is the owner's to mend.
    pub(super) fn on_reinvite_timeout(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        call_id: CallId,
    ) {
        if let Some(ClientTx::Reinvite { sent, .. }) = self.client_tx.remove(key) {
            let SentIn {
                mut dialog,
                source,
                local,
            } = *sent;
            let branch = new_branch(self.rng.random());
            let via = our_via(source.transport, local, &branch);
            let contact = contact_for(source.transport, local);
            let (ack, _) = dialog.new_request(Method::Ack, &via, &contact);
            self.remember_abandoned(
                now,
                Abandoned {
                    request: ack,
                    to: source,
                    end: false,
                    ack: None,
                },
            );
        }
        self.reinvite_failed(call_id, 408);
    }

    pub(super) fn reinvite_failed(&mut self, call_id: CallId, status: u16) {
        // A call that ended meanwhile has nothing left to fail.
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.reinviting = false;
        self.outputs.push_back(UaOutput::ReinviteFailed {
            call: call_id,
            status,
        });
    }

    /// The ACK of the 2xx to our re-INVITE, remembered for its retransmissions.
    /// The ACK of the 2xx to our re-INVITE `key` (§13.2.2.4), even if the call has ended
    /// meanwhile: in the dialog as the re-INVITE left it, to the 2xx's Contact (§12.2.1.2: a
    /// target refresh's 2xx names the remote target); remembered for the 2xx's
    /// retransmissions.
    fn send_reinvite_ack(&mut self, key: &TransactionKey, response: &Response) {
        let branch = new_branch(self.rng.random());
        let Some(ClientTx::Reinvite {
            sent, ack: slot, ..
        }) = self.client_tx.get_mut(key)
        else {
            return;
        };
        let SentIn {
            dialog,
            source,
            local,
        } = &mut **sent;
        dialog.refresh_target(&response.headers);
        let via = our_via(source.transport, *local, &branch);
        let contact = contact_for(source.transport, *local);
        let (mut ack, next_hop) = dialog.new_request(Method::Ack, &via, &contact);
        ack.headers.remove("Contact");
        let to = destination_for(&next_hop, *source);
        *slot = Some(Box::new((to, ack.clone())));
        self.outputs.push_back(UaOutput::Transmit {
            to,
            message: SipMessage::Request(ack),
        });
    }
}

/// Sets the direction of every m-line of `offer` (replacing the one `sdp::offer` wrote).
fn set_direction(offer: &mut SessionDescription, direction: Direction) {
    for media in &mut offer.media {
        media
            .attributes
            .retain(|a| Direction::from_attribute_name(&a.name).is_none());
        media
            .attributes
            .push(Attribute::flag(direction.attribute_name()));
    }
}
