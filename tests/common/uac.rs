//! A hand-driven SIP UAC over UDP for end-to-end tests: one signalling socket, one RTP socket.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::Server;

/// A minimal UAC: one signalling socket, one RTP socket.
pub struct Uac {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub server: String,
    pub call_id: String,
    pub tag: String,
}

impl Uac {
    pub fn new(server: &Server, call: &str) -> Uac {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind SIP");
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
        rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Uac {
            sip,
            rtp,
            server: format!("127.0.0.1:{}", server.sip_port),
            call_id: format!("{call}-{}@127.0.0.1", std::process::id()),
            tag: format!("t{}", std::process::id()),
        }
    }

    pub fn sip_port(&self) -> u16 {
        self.sip.local_addr().unwrap().port()
    }

    pub fn sdp(&self, payload_types: &str) -> String {
        let port = self.rtp.local_addr().unwrap().port();
        format!(
            "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {payload_types}\r\na=sendrecv\r\n"
        )
    }

    pub fn request(
        &self,
        method: &str,
        user: &str,
        cseq: u32,
        to_tag: &str,
        branch: &str,
        body: &str,
    ) -> String {
        let port = self.sip_port();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{user}@{server} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:uac@127.0.0.1:{port}>;tag={tag}\r\n\
             To: <sip:{user}@{server}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:uac@127.0.0.1:{port}>\r\n\
             {content_type}Content-Length: {len}\r\n\r\n{body}",
            server = self.server,
            tag = self.tag,
            call_id = self.call_id,
            len = body.len(),
        )
    }

    pub fn send(&self, text: &str) {
        self.sip
            .send_to(text.as_bytes(), &self.server)
            .expect("send SIP");
    }

    /// Next message received within `within` (responses and requests alike).
    pub fn recv(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// The first final (>= 200) response to `method`, skipping provisionals.
    pub fn final_response(&self, method: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some(msg) = self.recv(Duration::from_millis(500)) else {
                continue;
            };
            if status(&msg) >= 200 && header(&msg, "CSeq").is_some_and(|c| c.ends_with(method)) {
                return msg;
            }
        }
        panic!("no final response to {method}");
    }
}

pub fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn to_tag(msg: &str) -> String {
    let to = header(msg, "To").expect("To header");
    let tag = to
        .split(";tag=")
        .nth(1)
        .expect("To tag")
        .split(';')
        .next()
        .unwrap();
    format!(";tag={tag}")
}

pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

pub fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port in SDP")
}

/// A 200 OK for a request (echoing its dialog headers).
pub fn ok_for(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for line in request.lines().take_while(|l| !l.is_empty()) {
            if line
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
