//! How our messages are addressed: our Via and Contact, where an in-dialog request goes, and
//! the `received`/`rport` stamp on requests that reach us (RFC 3261 §18.2.1, RFC 3581).
//!
//! Owns: these pure functions of addresses and transports.
//! Must not: keep state or send anything.

use std::net::SocketAddr;

use crate::sip::message::{Host, Request, Via, ViaRef};
use crate::sip::transaction::{Peer, Transport};

/// RFC 3261 §18.2.1 / RFC 3581: record where a request really came from in its top Via.
pub fn stamp_via(request: &mut Request, source: SocketAddr) {
    // Only the top Via is ours to stamp; the others are left as received.
    let Some(header) = request.headers.0.iter_mut().find(|h| h.name == "Via") else {
        return;
    };
    // Read in place first: most requests come from the address their Via names and do not
    // ask for rport, and need no copy of it.
    let Ok(read) = ViaRef::read(&header.value) else {
        return;
    };
    let wants_rport = read.has_param("rport");
    if read.host_ip() == Some(source.ip()) && !wants_rport {
        return;
    }
    let Ok(mut top) = Via::parse(&header.value) else {
        return;
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, SipMessage};

    fn stamped(via: &str, source: &str) -> String {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKlower\r\n\
             From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let Ok(SipMessage::Request(mut request)) = parse(text.as_bytes()) else {
            panic!("request parses");
        };
        stamp_via(&mut request, source.parse().expect("source"));
        let vias: Vec<&str> = request.headers.get_all("Via").collect();
        assert_eq!(
            vias[1], "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKlower",
            "only the top"
        );
        vias[0].to_string()
    }

    /// RFC 3261 §18.2.1 and RFC 3581 §4: `received` when the packet came from elsewhere than
    /// the sent-by (or it names a host), `rport` filled when asked for; else as received.
    #[test]
    fn the_top_via_records_where_the_request_came_from() {
        let from_itself = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1";
        assert_eq!(stamped(from_itself, "192.0.2.1:5070"), from_itself);
        assert_eq!(
            stamped(from_itself, "198.51.100.7:5070"),
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;received=198.51.100.7"
        );
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bK2",
                "192.0.2.1:40000"
            ),
            "SIP/2.0/UDP 192.0.2.1;rport=40000;branch=z9hG4bK2;received=192.0.2.1"
        );
        assert_eq!(
            stamped(
                "SIP/2.0/UDP pbx.example.com;branch=z9hG4bK3",
                "192.0.2.1:5060"
            ),
            "SIP/2.0/UDP pbx.example.com;branch=z9hG4bK3;received=192.0.2.1"
        );
        assert_eq!(
            stamped(
                "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK4",
                "[2001:db8::1]:5060"
            ),
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK4"
        );
        // A top Via that does not read is left for the checks that answer it.
        let broken = "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK5;=x";
        assert_eq!(stamped(broken, "198.51.100.7:5060"), broken);
    }
}
