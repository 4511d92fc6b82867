//! The random scenarios' callers and trunk on the wire: what they send (INVITEs with every
//! kind of offer, ACKs, re-INVITEs, UPDATEs, PRACKs, REFERs, BYEs, CANCELs, retransmissions,
//! the trunk's answers and requests, a second fork's 2xx) and how they answer what the core
//! sends them; every message through the SIP check, every event through the surfaces'.

use super::*;
use crate::sip::message::{Method, Response};

/// An answer of a caller or the trunk: who sends it, what the trace calls it, the message.
type Answer = (&'static str, String, SipMessage);

impl Scenario {
    /// A caller's or the trunk's message to the core, recorded for the SIP check.
    pub(super) fn send(&mut self, from: &'static str, message: SipMessage) {
        if let Err(e) = self.sip.sent(&message, self.h.now.at) {
            panic!("{e}");
        }
        if matches!(&message, SipMessage::Request(r) if r.method.as_str() != "ACK") {
            self.sent.push((from, message.clone(), self.h.now.at));
        }
        self.h.sip_from(from, message);
    }

    /// One of the last requests a caller or the trunk sent, sent again as its transaction
    /// would retransmit it, its answer lost: within Timer B/F (64·T1) of its first sending,
    /// an INVITE only while it has no final response (once it has, its ACK went instead).
    pub(super) fn resend(&mut self) {
        let now = self.h.now.at;
        let recent = self.sent.len().saturating_sub(10);
        let candidates: Vec<(&'static str, SipMessage)> = self.sent[recent..]
            .iter()
            .filter(|(_, message, at)| {
                let invite =
                    matches!(message, SipMessage::Request(r) if r.method.as_str() == "INVITE");
                now < *at + Duration::from_secs(32)
                    && !(invite && self.sip.answered_finally(message))
            })
            .map(|(from, message, _)| (*from, message.clone()))
            .collect();
        let Some((from, message)) = self.pick(&candidates) else {
            return;
        };
        if let SipMessage::Request(request) = &message {
            self.steps.push(format!(
                "{from} sends its {} again",
                request.method.as_str()
            ));
        }
        self.send(from, message);
    }

    /// A second fork behind the trunk answers one of our INVITEs the trunk answered too
    /// (another To tag): RFC 3261 §13.2.2.4, the core ACKs it and ends it.
    pub(super) fn trunk_fork_answers(&mut self) {
        let Some(invite) = self.pick(&self.trunk_answered.clone()) else {
            return;
        };
        self.steps.push("a second fork answers 200".into());
        let response = trunk_response(&invite, 200, "OK", "fork");
        self.send(TRUNK, SipMessage::Response(response));
    }

    /// A caller's request in its dialog (or about its INVITE).
    /// A caller's re-INVITE, from one that has our tag: without it the INVITE would be a new
    /// call from the same DN (the CTI check tells parties apart by DN).
    pub(super) fn peer_reinvites(
        &mut self,
        what: &str,
        make: impl FnOnce(&mut PeerCall) -> SipMessage,
    ) {
        let confirmed: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].to_tag.is_some())
            .collect();
        let Some(index) = self.pick(&confirmed) else {
            return;
        };
        self.steps.push(format!("{what} from p{index}"));
        let message = make(&mut self.peers[index]);
        self.send(PEER, message);
    }

    pub(super) fn peer_sends(
        &mut self,
        what: &str,
        make: impl FnOnce(&mut PeerCall) -> SipMessage,
    ) {
        if self.peers.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.peers.len());
        self.steps.push(format!("{what} from p{index}"));
        let message = make(&mut self.peers[index]);
        self.send(PEER, message);
    }

    /// A new caller whose INVITE replaces another caller's dialog (RFC 3891: an attended
    /// transfer's last step).
    pub(super) fn replacing_invite(&mut self) {
        let confirmed: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].to_tag.is_some())
            .collect();
        let Some(old) = self.pick(&confirmed) else {
            return;
        };
        let old_peer = &self.peers[old];
        let replaces = format!(
            "Replaces: {};to-tag={};from-tag=peer-p{old}\r\n",
            old_peer.call_id,
            old_peer.to_tag.as_deref().unwrap_or_default()
        );
        let user = old_peer.user.clone();
        let n = self.peers.len();
        let peer = PeerCall::new(&user, &format!("p{n}")).with_dn(&format!("555{}", 2000 + n));
        self.steps
            .push(format!("INVITE from p{n} to {user} replacing p{old}"));
        let invite = peer.invite(Some(&pcmu_sdp(30_000 + 2 * n as u16)), &replaces);
        self.peers.push(peer);
        self.send(PEER, invite);
    }

    /// The trunk's answer to one of our INVITEs: ringing, answered with SDP, or busy.
    pub(super) fn trunk_answers(&mut self) {
        if self.trunk_invites.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.trunk_invites.len());
        let status = [180, 183, 200, 486][self.rng.random_range(0..4)];
        self.steps.push(format!("trunk answers {status}"));
        let invite = if status < 200 {
            self.trunk_invites[index].clone()
        } else {
            self.trunk_invites.remove(index)
        };
        if status == 200 {
            self.trunk_answered.push(invite.clone());
        }
        let mut response = trunk_response(&invite, status, "Whatever", "target");
        if status == 183 {
            // Early media: the trunk's answer in a provisional response.
            response
                .headers
                .set("Content-Type", "application/sdp".to_string());
            response.body = pcmu_sdp(31_000).into_bytes();
        }
        self.send(TRUNK, SipMessage::Response(response));
    }

    /// The trunk ends one of the calls it answered: a BYE in the dialog our INVITE made.
    pub(super) fn trunk_hangs_up(&mut self) {
        if self.trunk_answered.is_empty() {
            return;
        }
        let invite = self
            .trunk_answered
            .remove(self.rng.random_range(0..self.trunk_answered.len()));
        self.steps.push("trunk BYE".into());
        let message = self.trunk_in_dialog(&invite, "BYE", "", None);
        self.send(TRUNK, message);
    }

    /// A request of the trunk in the dialog `invite` began, with its next CSeq.
    pub(super) fn trunk_in_dialog(
        &mut self,
        invite: &Request,
        method: &str,
        extra: &str,
        body: Option<&str>,
    ) -> SipMessage {
        self.trunk_cseq += 1;
        let n = self.steps.len() as u32;
        trunk_request(invite, method, n, self.trunk_cseq, extra, body)
    }

    /// The trunk's other requests in a call it answered: a hold or resume (re-INVITE or
    /// UPDATE), a re-INVITE asking for our offer, a REFER, an INFO or an OPTIONS.
    pub(super) fn trunk_sends(&mut self) {
        let Some(invite) = self.pick(&self.trunk_answered.clone()) else {
            return;
        };
        let direction = ["sendonly", "inactive", "sendrecv"][self.rng.random_range(0..3)];
        let sdp = sdp_with(31_000, direction);
        let target = self.fresh_number("77");
        let refer_to = format!("Refer-To: <sip:{target}@{TRUNK}>\r\n");
        let (method, extra, body) = match self.rng.random_range(0..6) {
            0 => ("INVITE", "", Some(sdp.as_str())),
            1 => ("UPDATE", "", Some(sdp.as_str())),
            2 => ("INVITE", "", None),
            3 => ("REFER", refer_to.as_str(), None),
            4 => ("INFO", "", None),
            _ => ("OPTIONS", "", None),
        };
        self.steps.push(format!(
            "trunk {method} {}",
            if body.is_some() { direction } else { "" }
        ));
        let message = self.trunk_in_dialog(&invite, method, extra, body);
        self.send(TRUNK, message);
    }

    /// A caller's offer: mostly PCMU, else another codec (PCMA, Opus), SRTP (SDES), or
    /// nothing we can take (G.729 only: 488), at `port`.
    pub(super) fn some_offer(&mut self, port: u16) -> String {
        let media = |line: &str, attributes: &str| {
            format!(
                "v=0\r\no=peer 2890844526 1 IN IP4 {PEER_MEDIA_IP}\r\ns=-\r\n\
                 c=IN IP4 {PEER_MEDIA_IP}\r\nt=0 0\r\nm=audio {port} {line}\r\n{attributes}"
            )
        };
        match self.rng.random_range(0..10) {
            0 => media("RTP/AVP 8", "a=rtpmap:8 PCMA/8000\r\n"),
            1 => media(
                "RTP/AVP 111 101",
                "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n\
                 a=rtpmap:101 telephone-event/48000\r\n",
            ),
            2 => media(
                "RTP/SAVP 0",
                "a=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 \
                 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VsZi1uZXR3b3JrKQ\r\n",
            ),
            3 => media("RTP/AVP 18", "a=rtpmap:18 G729/8000\r\n"),
            _ => pcmu_sdp(port),
        }
    }

    /// A caller's ACK; an offerless caller's mostly carries its answer.
    pub(super) fn peer_acks(&mut self) {
        if self.peers.is_empty() {
            return;
        }
        let index = self.rng.random_range(0..self.peers.len());
        let answer = self.offerless.contains(&index) && self.rng.random_range(0..5) > 0;
        self.steps.push(format!(
            "ACK{} from p{index}",
            if answer { " with SDP" } else { "" }
        ));
        let sdp = answer.then(|| pcmu_sdp(30_000 + 2 * index as u16));
        if answer {
            self.reached.offer_answer_variants += 1;
        }
        let message = self.peers[index].ack_with(sdp.as_deref());
        self.send(PEER, message);
    }

    /// A caller's requests that change nothing in the call (INFO, OPTIONS), or a PRACK of
    /// nothing we sent.
    pub(super) fn peer_sends_other(&mut self) {
        match self.rng.random_range(0..3) {
            0 => self.peer_sends("INFO", |peer| peer.in_dialog("INFO", "")),
            1 => self.peer_sends("OPTIONS", |peer| peer.in_dialog("OPTIONS", "")),
            _ => self.peer_sends("PRACK of RSeq 77", |peer| peer.prack(77)),
        }
    }

    /// What the core sent and said: the callers learn our tags, the applications the calls
    /// offered to them, the trunk our INVITEs; the callers and the trunk answer most of our
    /// other requests (BYE, re-INVITE, UPDATE, REFER, NOTIFY, CANCEL, ...) — 200, or 481 as
    /// for a dialog they have forgotten — and leave the rest to time out.
    pub(super) fn read_wire(&mut self) {
        for _ in 0..8 {
            if !self.read_wire_once() {
                break;
            }
        }
    }

    /// One pass of [`Scenario::read_wire`]: whether anyone answered (which may make more).
    /// Caller `index` reads our `response`: learns our tag, ACKs most failures of its
    /// INVITE (RFC 3261 §17.1.1.3; the rest leave the core to retransmit until Timer H) and
    /// PRACKs most reliable provisionals (RFC 3262).
    fn caller_reads(&mut self, index: usize, response: &Response, answers: &mut Vec<Answer>) {
        let peer = &mut self.peers[index];
        if peer.to_tag.is_none() {
            peer.learn(response);
        }
        let failed = response.status >= 300
            && self.peers[index].is_invite_answer(response)
            && self.rng.random_range(0..5) > 0;
        if failed {
            let ack = self.peers[index].ack_failure(response);
            let what = format!("ACK of {} from p{index}", response.status);
            answers.push((PEER, what, ack));
        }
        let rseq = response
            .headers
            .get("RSeq")
            .and_then(|r| r.trim().parse().ok());
        if let Some(rseq) = rseq.filter(|_| self.rng.random_range(0..5) > 0) {
            let prack = self.peers[index].prack(rseq);
            self.reached.offer_answer_variants += 1;
            answers.push((PEER, format!("PRACK {rseq} from p{index}"), prack));
        }
    }

    /// The trunk reads our `response`: it ACKs most 2xx of its re-INVITEs.
    fn trunk_reads(&mut self, response: &Response, answers: &mut Vec<Answer>) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if !(200..300).contains(&response.status) || cseq.method != Method::Invite {
            return;
        }
        let call_id = response.headers.get("Call-ID");
        let invite = self
            .trunk_answered
            .iter()
            .find(|i| i.headers.get("Call-ID") == call_id)
            .cloned();
        if let Some(invite) = invite.filter(|_| self.rng.random_range(0..10) > 0) {
            let n = self.steps.len() as u32;
            let ack = trunk_request(&invite, "ACK", n, cseq.seq, "", None);
            answers.push((TRUNK, "trunk ACK".into(), ack));
        }
    }

    pub(super) fn read_wire_once(&mut self) -> bool {
        let wire: Vec<(Peer, SipMessage)> = self.h.wire.drain(..).collect();
        for (to, message) in &wire {
            if let Err(e) = self.sip.received(message, self.step_started) {
                panic!("{e}");
            }
            let cseq = message.headers().get("CSeq").unwrap_or_default();
            let call_id = message.headers().get("Call-ID").unwrap_or_default();
            match message {
                SipMessage::Request(r) => trace(format_args!(
                    "    sent to {}: {} ({cseq}, {call_id})",
                    to.addr,
                    r.method.as_str()
                )),
                SipMessage::Response(r) => trace(format_args!(
                    "    sent to {}: {} ({cseq}, {call_id})",
                    to.addr, r.status
                )),
            }
        }
        let mut answers = Vec::new();
        for (to, message) in &wire {
            let SipMessage::Request(request) = message else {
                continue;
            };
            let initial_invite =
                request.method.as_str() == "INVITE" && request.headers.to_tag().is_none();
            if initial_invite || request.method.as_str() == "ACK" {
                continue;
            }
            // A retransmission gets the answer the first copy got (if it got one).
            let key = format!(
                "{} {}",
                request.headers.get("Via").unwrap_or_default(),
                request.method.as_str()
            );
            let status = match self.answered.get(&key) {
                Some(&status) => status,
                None => match self.rng.random_range(0..10) {
                    0..=6 => 200,
                    7 => 481,
                    _ => continue,
                },
            };
            self.answered.insert(key, status);
            let mut response = crate::sip::message::Response::for_request(
                request,
                status,
                if status == 200 { "OK" } else { "Gone" },
            );
            let from = if to.addr == addr(TRUNK) { TRUNK } else { PEER };
            if status == 200 && request.method.as_str() == "INVITE" {
                response
                    .headers
                    .push("Contact", format!("<sip:peer@{from}>"));
                let sdp = sdp_with(31_000, "sendrecv");
                response
                    .headers
                    .set("Content-Type", "application/sdp".to_string());
                response.body = sdp.into_bytes();
            }
            answers.push((
                from,
                format!("{status} to {}", request.method.as_str()),
                SipMessage::Response(response),
            ));
        }
        for (to, message) in wire {
            match message {
                SipMessage::Response(response) => {
                    let call_id = response.headers.get("Call-ID").unwrap_or_default();
                    match self.peers.iter().position(|p| p.call_id == call_id) {
                        Some(index) => self.caller_reads(index, &response, &mut answers),
                        None if to.addr == addr(TRUNK) => self.trunk_reads(&response, &mut answers),
                        None => {}
                    }
                }
                SipMessage::Request(request) => {
                    // Each INVITE once, retransmissions aside; the trunk answers it finally
                    // once (a 200 after its 486 would be the trunk's error, not ours).
                    let branch = request.headers.get("Via").unwrap_or_default().to_string();
                    if request.method.as_str() == "INVITE"
                        && request.headers.to_tag().is_none()
                        && to.addr == addr(TRUNK)
                        && self.trunk_branches.insert(branch)
                    {
                        self.trunk_invites.push(request);
                    }
                }
            }
        }
        let answered = !answers.is_empty();
        for (from, what, message) in answers {
            let step = format!("{from} answers {what}");
            trace(&step);
            self.steps.push(step);
            self.reached.answers += 1;
            self.send(from, message);
        }
        let offered: Vec<CallId> = self
            .h
            .events_named("IncomingCall")
            .iter()
            .filter_map(|e| e["CallId"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        for call in offered {
            if !self.calls.contains(&call) {
                self.calls.push(call);
            }
        }
        let agent_events = self.h.core.take_agent_events();
        for (agent, event) in &agent_events {
            trace(format_args!(
                "    agent {agent}: {} {}",
                event.event_type, event.content
            ));
        }
        let cti = self.h.take_cti();
        let store = self.h.core.take_store_events();
        let events = &self.h.seen[self.events_read..];
        self.events_read = self.h.seen.len();
        for event in events.iter().chain(&cti) {
            trace(format_args!("    {event}"));
        }
        for event in &store {
            trace(format_args!("    store: {event:?}"));
        }
        if let Err(e) = self
            .desktops
            .read(&agent_events)
            .and_then(|()| self.surfaces.read_events(events))
            .and_then(|()| self.surfaces.read_cti(&cti))
            .and_then(|()| self.surfaces.same_releases())
            .and_then(|()| self.surfaces.read_store(&store))
        {
            panic!("{e}");
        }
        for event in cti {
            let (Some(dn), Some(conn_id)) = (
                event["ThisDN"].as_str(),
                event["ConnID"].as_str().and_then(ConnId::parse),
            ) else {
                continue;
            };
            let party = (dn.to_string(), conn_id);
            if !self.cti_parties.contains(&party) {
                self.cti_parties.push(party);
            }
        }
        answered
    }
}
