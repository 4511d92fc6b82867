//! IPv6 and dual stack: SIP over [::1], SDP with IP6 addresses, RTP echo over IPv6, and IPv4
//! calls on the same dual-stack media sockets.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Server;

fn call_and_echo(server: &Server, ip: &str, family: &str) {
    let bracketed = if family == "IP6" {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let sip = UdpSocket::bind(format!("{bracketed}:0")).expect("bind SIP");
    sip.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let rtp = UdpSocket::bind(format!("{bracketed}:0")).expect("bind RTP");
    rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sip_port = sip.local_addr().unwrap().port();
    let rtp_port = rtp.local_addr().unwrap().port();
    let target = format!("{bracketed}:{}", server.sip_port);
    let sdp = format!(
        "v=0\r\no=t 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\n"
    );
    let call_id = format!("v6-{family}-{}", std::process::id());
    let head = |method: &str, cseq: u32, to_tag: &str, branch: &str| {
        format!(
            "{method} sip:echo@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {bracketed}:{sip_port};branch=z9hG4bK{branch}\r\n\
             From: <sip:t@{bracketed}:{sip_port}>;tag=v6\r\nTo: <sip:echo@{target}>{to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:t@{bracketed}:{sip_port}>\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", 1, "", "i"),
        sdp.len()
    );
    sip.send_to(invite.as_bytes(), &target).unwrap();
    let mut buf = [0u8; 65535];
    let ok = loop {
        let (n, _) = sip.recv_from(&mut buf).expect("response to INVITE");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            break text;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains(&format!("c=IN {family} {ip}")),
        "media address in our family: {ok}"
    );
    let port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port");
    let tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .expect("To tag")
        .trim()
        .to_string();
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("ACK", 1, &format!(";tag={tag}"), "a")
    );
    sip.send_to(ack.as_bytes(), &target).unwrap();
    let media: std::net::SocketAddr = format!("{bracketed}:{port}").parse().unwrap();
    let echoed = common::stream_and_check_echo(&rtp, media, 25);
    assert!(echoed >= 22, "{echoed} of 25 frames echoed over {family}");
    let bye = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("BYE", 2, &format!(";tag={tag}"), "b")
    );
    sip.send_to(bye.as_bytes(), &target).unwrap();
    let (n, _) = sip.recv_from(&mut buf).expect("response to BYE");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));
}

#[test]
fn ipv6_and_ipv4_calls_on_a_dual_stack_server() {
    let server = Server::start_dual_stack();
    call_and_echo(&server, "::1", "IP6");
    call_and_echo(&server, "127.0.0.1", "IP4");
    server.wait_no_connections(Duration::from_secs(5));
}
