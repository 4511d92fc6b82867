//! End to end: SIP over TLS. A client verifies callbridge's certificate, its plain-RTP offer
//! is refused (SRTP is required on TLS by default), an SRTP offer is answered, and the BYE
//! callbridge sends when the connection is deleted comes back over the same TLS connection.
//! Bad certificate configuration is refused by `check-config`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::uac;
use common::Server;
use serde_json::json;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the server that trusts only `certificate`.
fn connect(port: u16, certificate: &std::path::Path) -> Tls {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(certificate).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    rustls::StreamOwned::new(connection, socket)
}

/// Reads until one whole SIP message (by Content-Length) is in `buf`; returns it.
fn read_message(tls: &mut Tls, buf: &mut Vec<u8>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = uac::header(&head, "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let message: Vec<u8> = buf.drain(..end + 4 + length).collect();
                return String::from_utf8_lossy(&message).into_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no whole message over TLS; have {:?}",
            String::from_utf8_lossy(buf)
        );
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk) {
            Ok(0) => panic!("the server closed the TLS connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("TLS read: {e}"),
        }
    }
}

/// The next final response (skipping 1xx).
fn final_response(tls: &mut Tls, buf: &mut Vec<u8>) -> String {
    loop {
        let message = read_message(tls, buf, Duration::from_secs(5));
        if uac::status(&message) >= 200 {
            return message;
        }
    }
}

/// A request of call `call` (its Call-ID), in a new transaction `branch`.
fn request(
    method: &str,
    (call, branch): (&str, &str),
    cseq: u32,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:echo@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tls@127.0.0.1>;tag=tls1\r\n\
         To: <sip:echo@127.0.0.1>{to_tag}\r\n\
         Call-ID: tls-{call}@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:tls@127.0.0.1:5999;transport=tls>\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn sdp(profile: &str, crypto: &str) -> String {
    format!(
        "v=0\r\no=tls 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 {profile} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n"
    )
}

#[test]
fn tls_calls_need_srtp_and_our_bye_returns_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = common::self_signed_certificate(dir.path());
    let tls_port = common::free_tcp_port();
    let server = Server::start_with_tls("", tls_port, &certificate, &key);
    let mut tls = connect(tls_port, &certificate);
    let mut buf = Vec::new();

    // Plain RTP on a TLS call: 488, SRTP is required.
    let plain = sdp("RTP/AVP", "");
    let invite = request(
        "INVITE",
        ("plain", "plain"),
        1,
        "",
        "Content-Type: application/sdp\r\n",
        &plain,
    );
    tls.write_all(invite.as_bytes()).unwrap();
    let refused = final_response(&mut tls, &mut buf);
    assert_eq!(uac::status(&refused), 488, "{refused}");
    let ack = request("ACK", ("plain", "plain"), 1, &uac::to_tag(&refused), "", "");
    tls.write_all(ack.as_bytes()).unwrap();

    // SDES-SRTP: answered with RTP/SAVP and our key; Contact names TLS.
    let key_salt = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let srtp = sdp(
        "RTP/SAVP",
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key_salt}\r\n"),
    );
    let invite = request(
        "INVITE",
        ("srtp", "srtp"),
        1,
        "",
        "Content-Type: application/sdp\r\n",
        &srtp,
    );
    tls.write_all(invite.as_bytes()).unwrap();
    let ok = final_response(&mut tls, &mut buf);
    assert_eq!(uac::status(&ok), 200, "{ok}");
    let answer = uac::body(&ok);
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    assert!(
        answer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{answer}"
    );
    assert!(
        uac::header(&ok, "Contact")
            .unwrap()
            .contains("transport=tls"),
        "{ok}"
    );
    let tag = uac::to_tag(&ok);
    tls.write_all(request("ACK", ("srtp", "srtp2"), 1, &tag, "", "").as_bytes())
        .unwrap();

    // Deleting the connection sends BYE over this TLS connection.
    let connections = server.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    let id = connections[0]["ConnectionId"].as_str().unwrap().to_string();
    let (code, body) = server.action("DeleteConnection", json!({ "ConnectionId": id }));
    assert_eq!(code, 200, "{body}");
    let bye = read_message(&mut tls, &mut buf, Duration::from_secs(5));
    assert!(bye.starts_with("BYE "), "{bye}");
    assert!(bye.contains("SIP/2.0/TLS"), "our Via names TLS: {bye}");
    server.wait_no_connections(Duration::from_secs(2));
}

#[test]
fn check_config_refuses_tls_without_a_usable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (certificate, _) = common::self_signed_certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, wrong_key) = common::self_signed_certificate(other.path());
    let cases = [
        ("", "needs sip.tls_certificate"),
        (
            "tls_certificate = \"/nonexistent/cert.pem\"\ntls_private_key = \"/nonexistent/key.pem\"\n",
            "/nonexistent/cert.pem",
        ),
        (
            &*format!(
                "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
                certificate.display(),
                wrong_key.display()
            ),
            "does the key belong",
        ),
    ];
    for (files, expected) in cases {
        let path = dir.path().join("callbridge.toml");
        std::fs::write(
            &path,
            format!("[sip]\nlisten = [\"tls://127.0.0.1:5061\"]\n{files}"),
        )
        .unwrap();
        let (accepted, stderr) = common::check_config(&path);
        assert!(!accepted, "{files}: accepted");
        assert!(stderr.contains(expected), "{files}: {stderr}");
    }
}
