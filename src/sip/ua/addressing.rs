//! How our messages are addressed: our Via and Contact, where an in-dialog request goes, and
//! the `received`/`rport` stamp on requests that reach us (RFC 3261 §18.2.1, RFC 3581).
//!
//! Owns: these pure functions of addresses and transports.
//! Must not: keep state or send anything.

use std::net::SocketAddr;

use crate::sip::message::{Host, Request, Via};
use crate::sip::transaction::{Peer, Transport};

/// RFC 3261 §18.2.1 / RFC 3581: record where a request really came from in its top Via.
pub fn stamp_via(request: &mut Request, source: SocketAddr) {
    // Only the top Via is ours to stamp; the others are left as received.
    let Some(header) = request.headers.0.iter_mut().find(|h| h.name == "Via") else {
        return;
    };
    let Ok(mut top) = Via::parse(&header.value) else {
        return;
    };
    let sent_by_is_source = match &top.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip) == source.ip(),
        Host::V6(ip) => std::net::IpAddr::V6(*ip) == source.ip(),
        Host::Domain(_) => false,
    };
    let wants_rport = top
        .params
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("rport"));
    if sent_by_is_source && !wants_rport {
        return;
    }
    let received = match source.ip() {
        std::net::IpAddr::V4(ip) => crate::text::Ipv4Text::new(ip).as_str().to_string(),
        std::net::IpAddr::V6(ip) => ip.to_string(),
    };
    top.set_param("received", Some(received));
    if wants_rport {
        top.set_param("rport", Some(source.port().to_string()));
    }
    header.value = top.to_string();
}

pub(super) fn our_via(transport: Transport, local: SocketAddr, branch: &str) -> Via {
    let text = format!(
        "SIP/2.0/{} {};branch={branch};rport",
        transport_name(transport),
        crate::text::host_port(local)
    );
    Via::parse(&text).expect("our own Via text is well-formed")
}

pub(super) fn contact_for(transport: Transport, local: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("<sip:callbridge@{}>", crate::text::host_port(local)),
        Transport::Tcp => format!(
            "<sip:callbridge@{};transport=tcp>",
            crate::text::host_port(local)
        ),
        Transport::Tls => format!(
            "<sip:callbridge@{};transport=tls>",
            crate::text::host_port(local)
        ),
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    }
}

/// Where an in-dialog request goes. Over TCP the peer's own connection is reused (it may be
/// behind NAT and it is the flow it chose); over UDP the next hop's IP literal and port, or the
/// peer's signalling address when the next hop is a name (no DNS on the control plane yet).
pub(super) fn destination_for(next_hop: &crate::sip::message::Uri, source: Peer) -> Peer {
    if source.transport.is_reliable() {
        return source;
    }
    let port = next_hop.port.unwrap_or(5060);
    let ip = match &next_hop.host {
        Host::V4(ip) => std::net::IpAddr::V4(*ip),
        Host::V6(ip) => std::net::IpAddr::V6(*ip),
        Host::Domain(_) => return source,
    };
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::new(ip, port),
    }
}
