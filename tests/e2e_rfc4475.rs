//! RFC 4475 in full, end to end: every message of the SIP torture set (§3.1–§3.4), byte-exact
//! from the RFC's Appendix A (`tests/rfc4475/*.dat`), sent to the real binary over UDP and over
//! TCP, each answered (or dropped) as the RFC says — and the server still answering OPTIONS
//! after each. One server serves the whole file.
//!
//! The server is an endpoint (a UAS: it routes `user@` to the echo service and nothing else),
//! so where the RFC tells proxies and endpoints apart the endpoint's answer is the one checked.
//! The messages that set up a call (they are valid INVITEs to `user@`) are acknowledged and
//! hung up, and the test ends with no call left.
//!
//! Besides the table: an RFC 2543 INVITE (§3.4 inv2543) is matched as RFC 3261 §17.2.3 says —
//! its retransmission is answered from its transaction and its branch-less ACK stops the
//! retransmissions of the final — and over TCP a valid request followed by junk in the same
//! write gets its answer on that connection before the connection closes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::uac::{header, status, to_tag};
use common::Server;

/// The standard test routes plus `user@`, which most torture INVITEs call: their bodies and
/// Accept headers are then judged the way they are for a call we would serve.
const ROUTES: &str = "[[route]]\nuser = \"^user$\"\nservice = \"echo\"\n";

/// How long a message that must go unanswered gets to prove it.
const SILENCE: Duration = Duration::from_millis(400);
/// After the last expected answer: time for an unexpected one to show up.
const AFTERMATH: Duration = Duration::from_millis(150);

/// What the server must do with one message on one transport.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// These final responses, in this order (a provisional 100 may come first; retransmitted
    /// finals are not counted twice).
    Finals(&'static [u16]),
    /// A 200 to an INVITE: the call is set up; the test acknowledges it and hangs up.
    Call,
    /// No response at all.
    Nothing,
}

use Expect::{Call, Finals, Nothing};

/// One torture message and what RFC 4475 wants of an endpoint receiving it over UDP and over
/// TCP (`tcp_closes`: the connection must then be closed by the server).
///
/// Where the RFC leaves a choice, the entry takes the answer a production endpoint gives
/// (Asterisk's PJSIP stack, Kamailio's core where it applies) and its note says so:
/// - escruri, baddate, regbadct (§3.1.2.11–13): liberal. Escaped headers in the Request-URI
///   are ignored, the Date is never used, and a REGISTER is refused with 405 whatever its
///   Contact, so all three are served like their valid neighbours.
/// - lwsstart, trws (§3.1.2.9–10): rejected, with 400 (dropping them would leave the client
///   retransmitting into silence).
/// - mismatch02 (§3.1.2.18): 501, which the RFC prefers to 400 (§8.2.1 inspects the method
///   before §8.2.2 the headers).
/// - badbranch (§3.2.1): a branch that is only the magic cookie falls back to RFC 2543
///   transaction matching, and the OPTIONS is answered.
/// - unksm2, regaut01, cparam01/02, regescrt (§3.3): the server is no registrar; REGISTER is
///   refused with 405 before its To, From and Contact are read (what the RFC says of
///   "endpoints choosing not to act as registrars").
/// - zeromf (§3.3.11): an endpoint processes Max-Forwards: 0 as if it were positive; 483 is a
///   proxy's answer.
/// - sdp01 (§3.3.15): 406 with a Warning (PJSIP's answer), not 400.
/// - Over TCP, a message whose framing is broken (ncl, mcl01, and inv2543 without the
///   Content-Length a stream requires, RFC 3261 §18.3) is answered 400 and the connection
///   closed; clerr (a body shorter than its Content-Length) leaves the server waiting for
///   the rest, the connection open (it closes after 32 s without more bytes).
struct Case {
    name: &'static str,
    section: &'static str,
    message: &'static [u8],
    udp: Expect,
    tcp: Expect,
    tcp_closes: bool,
}

macro_rules! case {
    ($section:literal, $name:literal, udp: $udp:expr, tcp: $tcp:expr $(, $closes:ident)?) => {
        Case {
            name: $name,
            section: $section,
            message: include_bytes!(concat!("rfc4475/", $name, ".dat")),
            udp: $udp,
            tcp: $tcp,
            tcp_closes: case!(@closes $($closes)?),
        }
    };
    (@closes closes) => { true };
    (@closes) => { false };
}

const CASES: &[Case] = &[
    // §3.1.1 valid messages.
    case!("3.1.1.1", "wsinv", udp: Finals(&[481]), tcp: Finals(&[481])),
    case!("3.1.1.2", "intmeth", udp: Finals(&[501]), tcp: Finals(&[501])),
    case!("3.1.1.3", "esc01", udp: Finals(&[404]), tcp: Finals(&[404])),
    case!("3.1.1.4", "escnull", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.1.1.5", "esc02", udp: Finals(&[501]), tcp: Finals(&[501])),
    case!("3.1.1.6", "lwsdisp", udp: Finals(&[200]), tcp: Finals(&[200])),
    case!("3.1.1.7", "longreq", udp: Call, tcp: Call),
    // Over TCP the datagram is a REGISTER, an INVITE (to nobody) and junk ("C\r\n\r\n").
    case!("3.1.1.8", "dblreq", udp: Finals(&[405]), tcp: Finals(&[405, 404]), closes),
    case!("3.1.1.9", "semiuri", udp: Finals(&[200]), tcp: Finals(&[200])),
    case!("3.1.1.10", "transports", udp: Finals(&[200]), tcp: Finals(&[200])),
    case!("3.1.1.11", "mpart01", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.1.1.12", "unreason", udp: Nothing, tcp: Nothing),
    case!("3.1.1.13", "noreason", udp: Nothing, tcp: Nothing),
    // §3.1.2 invalid messages.
    case!("3.1.2.1", "badinv01", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.2", "clerr", udp: Finals(&[400]), tcp: Nothing),
    case!("3.1.2.3", "ncl", udp: Finals(&[400]), tcp: Finals(&[400]), closes),
    case!("3.1.2.4", "scalar02", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.5", "scalarlg", udp: Nothing, tcp: Nothing),
    case!("3.1.2.6", "quotbal", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.7", "ltgtruri", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.8", "lwsruri", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.9", "lwsstart", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.10", "trws", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.11", "escruri", udp: Call, tcp: Call),
    case!("3.1.2.12", "baddate", udp: Call, tcp: Call),
    case!("3.1.2.13", "regbadct", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.1.2.14", "badaspec", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.15", "baddn", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.16", "badvers", udp: Finals(&[505]), tcp: Finals(&[505])),
    case!("3.1.2.17", "mismatch01", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.1.2.18", "mismatch02", udp: Finals(&[501]), tcp: Finals(&[501])),
    case!("3.1.2.19", "bigcode", udp: Nothing, tcp: Nothing),
    // §3.2 transaction layer semantics.
    case!("3.2.1", "badbranch", udp: Finals(&[200]), tcp: Finals(&[200])),
    // §3.3 application-layer semantics.
    case!("3.3.1", "insuf", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.3.2", "unkscm", udp: Finals(&[416]), tcp: Finals(&[416])),
    case!("3.3.3", "novelsc", udp: Finals(&[416]), tcp: Finals(&[416])),
    case!("3.3.4", "unksm2", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.3.5", "bext01", udp: Finals(&[420]), tcp: Finals(&[420])),
    case!("3.3.6", "invut", udp: Finals(&[415]), tcp: Finals(&[415])),
    case!("3.3.7", "regaut01", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.3.8", "multi01", udp: Finals(&[400]), tcp: Finals(&[400])),
    case!("3.3.9", "mcl01", udp: Finals(&[400]), tcp: Finals(&[400]), closes),
    case!("3.3.10", "bcast", udp: Nothing, tcp: Nothing),
    case!("3.3.11", "zeromf", udp: Finals(&[200]), tcp: Finals(&[200])),
    case!("3.3.12", "cparam01", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.3.13", "cparam02", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.3.14", "regescrt", udp: Finals(&[405]), tcp: Finals(&[405])),
    case!("3.3.15", "sdp01", udp: Finals(&[406]), tcp: Finals(&[406])),
    // §3.4 backward compatibility.
    case!("3.4.1", "inv2543", udp: Finals(&[404]), tcp: Finals(&[400]), closes),
];

/// Messages whose top Via repeats an earlier one's branch and sent-by for the same method:
/// cparam02 is cparam01's (z9hG4bKkdjuw from saturn.example.com:5060). Over UDP, while
/// cparam01's transaction lives (64·T1 after its answer), cparam02 *is* its retransmission
/// (RFC 3261 §17.2.3) and is absorbed by it; it is sent once that transaction has ended. Over
/// TCP a non-INVITE transaction ends with its answer (Timer J is zero), so order does not
/// matter there.
const UDP_DEFERRED: &[&str] = &["cparam02"];

#[test]
fn every_rfc4475_message_is_handled_as_the_rfc_says_over_udp_and_tcp() {
    let server = Server::start(ROUTES);
    let target: SocketAddr = ([127, 0, 0, 1], server.sip_port).into();
    let mut failures = Vec::new();

    for case in CASES {
        failures.extend(run_tcp(target, case).err());
        failures.extend(still_answers_options(target, case, "TCP").err());
    }
    // The same bytes over UDP would be retransmissions of the TCP transactions still alive
    // (same branch and sent-by, §17.2.3): those end first.
    wait_transactions_gone(&server);
    let deferred = |case: &&Case| UDP_DEFERRED.contains(&case.name);
    for case in CASES.iter().filter(|c| !deferred(c)) {
        failures.extend(run_udp(target, case).err());
        failures.extend(still_answers_options(target, case, "UDP").err());
    }
    wait_transactions_gone(&server);
    for case in CASES.iter().filter(deferred) {
        failures.extend(run_udp(target, case).err());
        failures.extend(still_answers_options(target, case, "UDP").err());
    }
    wait_transactions_gone(&server);

    failures.extend(rfc2543_invite_is_matched_by_its_fields(target).err());
    failures.extend(junk_after_a_request_closes_the_connection_after_the_answer(target).err());
    server.wait_no_connections(Duration::from_secs(5));
    assert!(
        failures.is_empty(),
        "{} of the checks failed:\n{}\nserver log:\n{}",
        failures.len(),
        failures.join("\n"),
        server.log()
    );
}

/// The files are the RFC's, byte for byte: every line ends in CRLF (the binary part of
/// mpart01 aside), the NULs and non-ASCII bytes are there, and there is one file per message.
#[test]
fn the_torture_messages_are_byte_exact() {
    let dir = common::repo_path("tests/rfc4475");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/rfc4475")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".dat"))
        .collect();
    files.sort();
    let mut names: Vec<String> = CASES.iter().map(|c| format!("{}.dat", c.name)).collect();
    names.sort();
    assert_eq!(
        files, names,
        "one file per message of §3, named as in the RFC"
    );
    for case in CASES.iter().filter(|c| c.name != "mpart01") {
        let lf = case.message.iter().filter(|&&b| b == b'\n').count();
        let crlf = case.message.windows(2).filter(|w| w == b"\r\n").count();
        assert_eq!(lf, crlf, "{}: a line end lost its CR", case.name);
    }
    let bytes = |name: &str| CASES.iter().find(|c| c.name == name).expect(name).message;
    assert!(bytes("intmeth").contains(&0), "intmeth's quoted NUL");
    assert!(bytes("mpart01").contains(&0), "mpart01's binary body part");
    assert!(std::str::from_utf8(bytes("unreason")).is_ok_and(|t| t.contains("простое")));
    assert_eq!(bytes("longreq").len(), 3515);
    assert_eq!(bytes("dblreq").len(), 750);
}

fn run_udp(target: SocketAddr, case: &Case) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .send_to(case.message, target)
        .map_err(|e| e.to_string())?;
    let mut peer = Datagrams { socket, target };
    let label = format!("{} {} over UDP", case.section, case.name);
    let answers = collect(&mut peer, case.udp, &label)?;
    check_answers(case, case.udp, &answers, &label)?;
    if let Call = case.udp {
        hang_up(&mut peer, &answers, "UDP", &label)?;
    }
    Ok(())
}

fn run_tcp(target: SocketAddr, case: &Case) -> Result<(), String> {
    let stream = TcpStream::connect(target).map_err(|e| e.to_string())?;
    let mut peer = Stream::new(stream);
    peer.write(case.message)?;
    let label = format!("{} {} over TCP", case.section, case.name);
    let answers = collect(&mut peer, case.tcp, &label)?;
    check_answers(case, case.tcp, &answers, &label)?;
    if let Call = case.tcp {
        hang_up(&mut peer, &answers, "TCP", &label)?;
    }
    let closed = peer.closed_within(if case.tcp_closes {
        Duration::from_secs(2)
    } else {
        AFTERMATH
    });
    match (case.tcp_closes, closed) {
        (true, false) => Err(format!("{label}: the connection was not closed")),
        (false, true) => Err(format!("{label}: the connection was closed")),
        _ => Ok(()),
    }
}

/// The responses to the message: until the expected finals are in (and a little longer, for
/// anything unexpected), or `SILENCE` for a message that gets none.
fn collect(peer: &mut dyn Peer, expect: Expect, label: &str) -> Result<Vec<String>, String> {
    let wanted = match expect {
        Finals(finals) => finals.len(),
        Call => 1,
        Nothing => 0,
    };
    let mut answers: Vec<String> = Vec::new();
    let mut deadline = Instant::now()
        + if wanted == 0 {
            SILENCE
        } else {
            Duration::from_secs(3)
        };
    loop {
        let finals = answers.iter().filter(|a| status(a) >= 200).count();
        if wanted > 0 && finals >= wanted && deadline > Instant::now() + AFTERMATH {
            deadline = Instant::now() + AFTERMATH;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match peer.receive(left) {
            Some(message) if answers.iter().any(|a| same_response(a, &message)) => {}
            Some(message) => answers.push(message),
            None => break,
        }
    }
    let finals = answers.iter().filter(|a| status(a) >= 200).count();
    if finals < wanted {
        return Err(format!(
            "{label}: expected {expect:?}, got {:?}",
            firsts(&answers)
        ));
    }
    Ok(answers)
}

/// A retransmission: same status line, same CSeq and same To (tag included).
fn same_response(a: &str, b: &str) -> bool {
    a.lines().next() == b.lines().next()
        && header(a, "CSeq") == header(b, "CSeq")
        && header(a, "To") == header(b, "To")
}

fn firsts(answers: &[String]) -> Vec<&str> {
    answers.iter().filter_map(|a| a.lines().next()).collect()
}

fn check_answers(
    case: &Case,
    expect: Expect,
    answers: &[String],
    label: &str,
) -> Result<(), String> {
    let finals: Vec<u16> = answers
        .iter()
        .map(|a| status(a))
        .filter(|&s| s >= 200)
        .collect();
    let provisional_ok = answers
        .iter()
        .map(|a| status(a))
        .all(|s| s >= 200 || s == 100);
    let expected: Vec<u16> = match expect {
        Finals(finals) => finals.to_vec(),
        Call => vec![200],
        Nothing => vec![],
    };
    let silent = !matches!(expect, Nothing) || answers.is_empty();
    if finals != expected || !provisional_ok || !silent {
        return Err(format!(
            "{label}: expected {expect:?}, got {:?}",
            firsts(answers)
        ));
    }
    // What the answer must carry besides its status.
    for answer in answers.iter().filter(|a| status(a) >= 200) {
        let has =
            |name: &str, needle: &str| header(answer, name).is_some_and(|v| v.contains(needle));
        let carried = match status(answer) {
            405 | 501 => has("Allow", "INVITE") && has("Allow", "OPTIONS"),
            420 => {
                has("Unsupported", "nothingSupportsThis")
                    && has("Unsupported", "nothingSupportsThisEither")
            }
            415 => has("Accept", "application/sdp"),
            406 => has("Warning", "399"),
            200 if matches!(expect, Call) => {
                has("Contact", "sip:") && has("Content-Type", "application/sdp")
            }
            _ => true,
        };
        if !carried {
            return Err(format!(
                "{label}: the {} lacks what it must carry:\n{answer}",
                status(answer)
            ));
        }
        let tagged = |to: &str| to.split_whitespace().collect::<String>().contains(";tag=");
        if header(answer, "To").is_some_and(|to| !tagged(to)) {
            return Err(format!(
                "{label}: the {} has no To tag:\n{answer}",
                status(answer)
            ));
        }
        if header(answer, "Call-ID").is_none() && case.name != "insuf" {
            return Err(format!("{label}: the {} has no Call-ID", status(answer)));
        }
    }
    Ok(())
}

/// ACK for the 200 and BYE: the BYE must be answered 200.
fn hang_up(
    peer: &mut dyn Peer,
    answers: &[String],
    transport: &str,
    label: &str,
) -> Result<(), String> {
    let ok = answers
        .iter()
        .find(|a| status(a) == 200)
        .ok_or_else(|| format!("{label}: no 200"))?;
    let field = |name: &str| {
        header(ok, name)
            .map(str::to_string)
            .ok_or_else(|| format!("{label}: the 200 has no {name}"))
    };
    let contact = field("Contact")?;
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_string();
    let (from, to, call_id) = (field("From")?, field("To")?, field("Call-ID")?);
    let seq: u32 = field("CSeq")?
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{label}: bad CSeq in the 200"))?;
    let local = peer.local();
    let request = |method: &str, seq: u32| {
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK-{method}-{seq}-{}\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            local.port()
        )
    };
    peer.send(request("ACK", seq).as_bytes())?;
    peer.send(request("BYE", seq + 1).as_bytes())?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match peer.receive(left) {
            Some(m) if header(&m, "CSeq").is_some_and(|c| c.ends_with("BYE")) => {
                return match status(&m) {
                    200 => Ok(()),
                    other => Err(format!("{label}: BYE answered {other}")),
                };
            }
            Some(_) => {}
            None => break,
        }
    }
    Err(format!("{label}: BYE not answered"))
}

/// After each message the server still serves: an OPTIONS of ours is answered 200.
fn still_answers_options(target: SocketAddr, case: &Case, transport: &str) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let options = format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-alive-{}-{transport}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=alive\r\nTo: <sip:probe@127.0.0.1>\r\n\
         Call-ID: alive-{}-{transport}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        case.name, case.name
    );
    let mut peer = Datagrams { socket, target };
    peer.send(options.as_bytes())?;
    match peer.receive(Duration::from_secs(2)) {
        Some(answer) if status(&answer) == 200 => Ok(()),
        other => Err(format!(
            "after {} over {transport}: OPTIONS got {other:?}",
            case.name
        )),
    }
}

/// §3.4 with RFC 3261 §17.2.3: the RFC 2543 INVITE's retransmission is answered from its
/// transaction (the same final, the same To tag: no second transaction), and its ACK — no
/// branch either, the To tag of our final — ends the final's retransmissions.
fn rfc2543_invite_is_matched_by_its_fields(target: SocketAddr) -> Result<(), String> {
    let label = "3.4.1 inv2543 over UDP, §17.2.3";
    let invite = CASES
        .iter()
        .find(|c| c.name == "inv2543")
        .expect("inv2543")
        .message;
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut peer = Datagrams { socket, target };
    peer.send(invite)?;
    let first =
        final_within(&mut peer, Duration::from_secs(2)).ok_or(format!("{label}: no final"))?;
    peer.send(invite)?;
    let again = final_within(&mut peer, Duration::from_secs(2))
        .ok_or(format!("{label}: retransmission unanswered"))?;
    if status(&first) != 404 || header(&again, "To") != header(&first, "To") {
        return Err(format!(
            "{label}: the retransmission got another answer:\n{first}\n{again}"
        ));
    }
    let ack = format!(
        "ACK sip:UserB@example.com SIP/2.0\r\nVia: SIP/2.0/UDP iftgw.example.com\r\n\
         From: <sip:+13035551111@ift.client.example.net;user=phone>\r\nTo: {}\r\n\
         Call-ID: inv2543.1717@ift.client.example.com\r\nCSeq: 56 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&first, "To").unwrap_or_default()
    );
    if !to_tag(&first).starts_with(";tag=") {
        return Err(format!("{label}: the 404 has no To tag"));
    }
    peer.send(ack.as_bytes())?;
    // Drain what was already on its way, then T2 (400 ms in the test config) and more: a final
    // still retransmitted would show up.
    std::thread::sleep(Duration::from_millis(100));
    while peer.receive(Duration::from_millis(10)).is_some() {}
    match peer.receive(Duration::from_millis(1200)) {
        Some(late) => Err(format!(
            "{label}: the final is still retransmitted after the ACK:\n{late}"
        )),
        None => Ok(()),
    }
}

fn final_within(peer: &mut Datagrams, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match peer.receive(left) {
            Some(m) if status(&m) >= 200 => return Some(m),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// The TCP case in its plainest form: an OPTIONS and junk in one write. The 200 comes
/// back on that connection, then the server closes it.
fn junk_after_a_request_closes_the_connection_after_the_answer(
    target: SocketAddr,
) -> Result<(), String> {
    let label = "OPTIONS followed by junk over TCP";
    let stream = TcpStream::connect(target).map_err(|e| e.to_string())?;
    let mut peer = Stream::new(stream);
    let local = peer.local();
    let options = format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-junk\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=junk\r\nTo: <sip:probe@127.0.0.1>\r\n\
         Call-ID: junk-after-options\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n\
         \x16\x03\x01 this is no SIP\r\n\r\n"
    );
    peer.write(options.as_bytes())?;
    match peer.receive(Duration::from_secs(2)) {
        Some(answer) if status(&answer) == 200 => {}
        other => return Err(format!("{label}: got {other:?}")),
    }
    if peer.closed_within(Duration::from_secs(2)) {
        Ok(())
    } else {
        Err(format!("{label}: the connection stayed open"))
    }
}

/// Polls the server's transaction gauge down to zero (Timer H, J and L: 64·T1 = 6.4 s).
fn wait_transactions_gone(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("callbridge_sip_transactions") > 0.0 {
        assert!(Instant::now() < deadline, "SIP transactions never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test's end of a UDP or TCP exchange with the server.
trait Peer {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The next message within `within`, None on silence (or a closed stream).
    fn receive(&mut self, within: Duration) -> Option<String>;
    fn local(&self) -> SocketAddr;
}

struct Datagrams {
    socket: UdpSocket,
    target: SocketAddr,
}

impl Peer for Datagrams {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.socket
            .send_to(bytes, self.target)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn receive(&mut self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .ok()?;
        let mut buf = [0u8; 65535];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound socket")
    }
}

/// A TCP connection and the bytes read from it not yet cut into messages.
struct Stream {
    stream: TcpStream,
    buffer: Vec<u8>,
    eof: bool,
}

impl Stream {
    fn new(stream: TcpStream) -> Stream {
        Stream {
            stream,
            buffer: Vec::new(),
            eof: false,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// One whole message off the front of the buffer (our responses always carry
    /// Content-Length).
    fn take_message(&mut self) -> Option<String> {
        let end = self.buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        let body: usize = header(&head, "Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if self.buffer.len() < end + body {
            return None;
        }
        let message: Vec<u8> = self.buffer.drain(..end + body).collect();
        Some(String::from_utf8_lossy(&message).into_owned())
    }

    /// Reads for at most `within`; false on timeout, true once the server closed.
    fn fill(&mut self, within: Duration) -> bool {
        if self.eof {
            return false;
        }
        let _ = self
            .stream
            .set_read_timeout(Some(within.max(Duration::from_millis(1))));
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// Whether the server closes the connection within `within` (anything it still sends is
    /// kept for `receive`).
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.eof {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.fill(left);
        }
        self.eof
    }
}

impl Peer for Stream {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.write(bytes)
    }

    fn receive(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(message) = self.take_message() {
                return Some(message);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if !self.fill(left) {
                return self.take_message();
            }
        }
    }

    fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("connected socket")
    }
}
