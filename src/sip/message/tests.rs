//! Fixtures shared by the unit tests of every `message` file, and the tests that span the whole
//! module: whole messages through every accessor, the RFC 4475 torture cases and the fuzz-style
//! robustness tests. A test of one file's code lives at the bottom of that file.

use std::net::Ipv4Addr;

use super::*;

/// Test messages are written with "\n"; the wire uses CRLF.
pub(super) fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

pub(super) fn request(buf: &[u8]) -> Request {
    match parse(buf) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

pub(super) fn response(buf: &[u8]) -> Response {
    match parse(buf) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

pub(super) fn domain(name: &str) -> Host {
    Host::Domain(name.to_string())
}

pub(super) fn v6(text: &str) -> Host {
    Host::V6(text.parse().expect("test literal is a valid IPv6 address"))
}

pub(super) const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

pub(super) fn basic_invite() -> Vec<u8> {
    let head = crlf(&format!(
        "INVITE sip:bob@biloxi.example.com:5062;transport=udp SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.101:5060>
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>
Route: <sip:p3.example.com;lr>
Content-Type: application/sdp
Content-Length: {}

",
        SDP.len()
    ));
    [head, SDP.as_bytes().to_vec()].concat()
}

pub(super) fn minimal(method_line: &str, extra: &str) -> Vec<u8> {
    crlf(&format!(
        "{method_line}
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bKbad
From: <sip:a@example.com>;tag=1
To: <sip:b@example.com>
Call-ID: bad.1
CSeq: 1 INVITE
Max-Forwards: 70
{extra}
"
    ))
}

pub(super) const DBLREQ: &str = "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 4

v=0
";

// ---- ordinary messages ----------------------------------------------------------------------

#[test]
fn invite_with_sdp_all_accessors() {
    let r = request(&basic_invite());
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.scheme, "sip");
    assert_eq!(r.uri.user.as_deref(), Some("bob"));
    assert_eq!(r.uri.host, domain("biloxi.example.com"));
    assert_eq!(r.uri.port, Some(5062));
    assert_eq!(r.uri.param("transport"), Some(Some("udp")));
    assert_eq!(r.body, SDP.as_bytes());

    let h = &r.headers;
    let via = h.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.host, domain("pc33.atlanta.example.com"));
    assert_eq!(via.port, Some(5060));
    assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(find_param(&via.params, "RPORT"), Some(None));
    assert_eq!(h.max_forwards().unwrap(), Some(70));
    let to = h.to().unwrap();
    assert_eq!(to.display.as_deref(), Some("Bob"));
    assert_eq!(to.uri.user.as_deref(), Some("bob"));
    assert_eq!(to.tag(), None);
    let from = h.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("Alice"));
    assert_eq!(from.tag(), Some("1928301774"));
    assert_eq!(
        h.call_id().unwrap(),
        "a84b4c76e66710@pc33.atlanta.example.com"
    );
    assert_eq!(
        h.cseq().unwrap(),
        CSeq {
            seq: 314159,
            method: Method::Invite
        }
    );
    let contacts = h.contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        contacts[0].uri.host,
        Host::V4(Ipv4Addr::new(192, 0, 2, 101))
    );
    assert_eq!(contacts[0].uri.port, Some(5060));
    let rr = h.record_routes().unwrap();
    assert_eq!(rr.len(), 2);
    assert_eq!(rr[1].uri.host, domain("p2.example.com"));
    assert_eq!(rr[1].uri.param("lr"), Some(None));
    assert_eq!(h.routes().unwrap()[0].uri.host, domain("p3.example.com"));
    assert_eq!(h.content_type(), Some("application/sdp"));
    assert_eq!(
        h.get("content-length"),
        Some(SDP.len().to_string().as_str())
    );
    r.check_mandatory().unwrap();
}

// ---- RFC 4475 valid messages ----------------------------------------------------------------

const WSINV_SDP: &str = "v=0\r\n\
o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n\
s=-\r\n\
c=IN IP4 192.0.2.4\r\n\
t=0 0\r\n\
m=audio 49217 RTP/AVP 0 12\r\n\
m=video 3227 RTP/AVP 31\r\n\
a=rtpmap:31 LPC\r\n";

/// RFC 4475 3.1.1.1 "wsinv": a short tortuous INVITE.
#[test]
fn rfc4475_wsinv() {
    assert_eq!(WSINV_SDP.len(), 150);
    let head = crlf(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

",
    );
    let r = request(&[head, WSINV_SDP.as_bytes().to_vec()].concat());
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.user.as_deref(), Some("vivekg"));
    assert_eq!(r.uri.param("unknownparam"), Some(None));
    let h = &r.headers;
    let to = h.to().unwrap();
    assert_eq!(to.uri.host, domain("chair-dnrc.example.com"));
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards().unwrap(), Some(68));
    assert_eq!(h.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(h.cseq().unwrap().seq, 9);
    assert_eq!(h.get("Subject"), Some(""));
    assert_eq!(
        h.get("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(h.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    let route = &h.routes().unwrap()[0];
    assert_eq!(route.uri.param("unknownwith"), Some(Some("value")));
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport.as_str(), vias[0].branch()),
        ("UDP", Some("390skdjuw"))
    );
    assert_eq!(vias[1].host, domain("spindle.example.com"));
    assert_eq!(
        (vias[1].transport.as_str(), vias[1].branch()),
        ("TCP", Some("z9hG4bK9ikj8"))
    );
    assert_eq!(vias[2].host, Host::V4(Ipv4Addr::new(192, 168, 255, 111)));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let contact = &h.contacts().unwrap()[0];
    assert_eq!(contact.display.as_deref(), Some("Quoted string \"\""));
    assert_eq!(
        find_param(&contact.params, "newparam"),
        Some(Some("newvalue"))
    );
    assert_eq!(find_param(&contact.params, "secondparam"), Some(None));
    assert_eq!(find_param(&contact.params, "q"), Some(Some("0.33")));
    assert_eq!(r.body, WSINV_SDP.as_bytes());
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.2 "intmeth": extension method full of token characters, crazy URI,
/// control characters escaped in a quoted display name, UTF-8 in a header value.
#[test]
fn rfc4475_intmeth() {
    let r = request(&crlf("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{FEFF}大停電\u{FEFF}
Content-Length: 0

"));
    let method = Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into());
    assert_eq!(r.method, method);
    assert_eq!(
        r.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        r.uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(r.uri.host, domain("example.com"));
    let h = &r.headers;
    assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    let to = h.to().unwrap();
    assert_eq!(to.display.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
    assert_eq!(
        to.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    let from = h.from().unwrap();
    assert_eq!(
        from.display.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        find_param(&from.params, "fromparam''~+*_!.-%"),
        Some(Some("\"работающий\""))
    );
    assert_eq!(
        h.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(h.cseq().unwrap().method, method);
    assert_eq!(h.max_forwards().unwrap(), Some(255));
    assert_eq!(
        h.get("EXTENSIONHEADER-!.%*+_`'~"),
        Some("\u{FEFF}大停電\u{FEFF}")
    );
    r.check_mandatory().unwrap();
    // Printing keeps the crazy parts intact.
    assert_eq!(parse(&r.to_bytes()).unwrap(), SipMessage::Request(r));
}

/// RFC 4475 3.1.1.3 "esc01": escaped characters in URI user parts and params, folded Contact.
#[test]
fn rfc4475_esc01() {
    let r = request(&crlf(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 0

",
    ));
    assert_eq!(r.uri.user.as_deref(), Some("sips%3Auser%40example.com"));
    assert_eq!(r.uri.host, domain("example.net"));
    assert_eq!(
        r.headers.to().unwrap().uri.user.as_deref(),
        Some("%75se%72")
    );
    assert_eq!(
        r.headers.from().unwrap().uri.user.as_deref(),
        Some("I%20have%20spaces")
    );
    let contact = &r.headers.contacts().unwrap()[0];
    assert_eq!(contact.uri.user.as_deref(), Some("cal%6Cer"));
    assert_eq!(contact.uri.param("%6C%72"), Some(None));
    assert_eq!(contact.uri.param("n%61me"), Some(Some("v%61lue%25%34%31")));
    assert_eq!(r.headers.content_type(), Some("application/sdp"));
    assert_eq!(
        r.uri.to_string(),
        "sip:sips%3Auser%40example.com@example.net"
    );
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.4/3.1.1.5 "escnull"/"esc02": %00 in users, '%' that is not an escape in a
/// method and a header name.
#[test]
fn rfc4475_escnull_and_esc02() {
    let r = request(&crlf(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    ));
    assert_eq!(
        r.headers.from().unwrap().uri.user.as_deref(),
        Some("null-%00-null")
    );
    let users: Vec<String> = r
        .headers
        .contacts()
        .unwrap()
        .into_iter()
        .filter_map(|c| c.uri.user)
        .collect();
    assert_eq!(users, ["%00", "%00%00"]);
    r.check_mandatory().unwrap();

    let r = request(&crlf(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209987
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
    ));
    assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(r.headers.to().unwrap().display.as_deref(), Some("%Z%45"));
    assert_eq!(r.headers.contacts().unwrap().len(), 2);
    assert_eq!(
        r.headers.get("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.6 "lwsdisp": no LWS between display name and '<'.
#[test]
fn rfc4475_lwsdisp() {
    let r = request(&crlf(
        "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
    ));
    let from = r.headers.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("caller"));
    assert_eq!(from.uri.user.as_deref(), Some("caller"));
    assert_eq!(from.tag(), Some("323"));
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.7 "longreq": very long values and many Vias (mixed compact/full names).
#[test]
fn rfc4475_longreq() {
    let long = "longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong".repeat(8);
    let mut text = format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of extreme{long} proportion\"<sip:user@example.com:6000;unknownparam1=very{long}value;{long}parameter-name=value>
From: sip:amazinglylongcallername{long}@example.net;tag=12{long}982424;unknown-param-name{long}=unknown-value;unknown-param-with-no-value
Call-ID: longreq.one{long}really@example.net
CSeq: 3882340 INVITE
Unknown-{long}-Name: unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value
Route: <sip:sip1.example.net;lr>, <sip:sip2.example.net;lr>, <sip:sip3.example.net;lr>, <sip:sip4.example.net;lr>, <sip:sip5.example.net;lr>
Max-Forwards: 70
"
    );
    let names = ["Via", "v", "V", "VIA"];
    for n in (1..=40).rev() {
        text.push_str(&format!(
            "{}: SIP/2.0/TCP sip{n}.example.com;branch=z9hG4bK{long}{n}\n",
            names[n % 4]
        ));
    }
    text.push_str(&format!(
        "Contact: <sip:amazinglylongcallername{long}@host5.example.net>\nContent-Length: 0\n\n"
    ));
    let buf = crlf(&text);
    assert!(buf.len() > 30_000);
    let r = request(&buf);
    let h = &r.headers;
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 40);
    assert_eq!(vias[0].host, domain("sip40.example.com"));
    assert_eq!(vias[39].branch(), Some(format!("z9hG4bK{long}1").as_str()));
    assert_eq!(h.routes().unwrap().len(), 5);
    let to = h.to().unwrap();
    assert_eq!(to.uri.port, Some(6000));
    assert_eq!(
        to.display.unwrap().len(),
        "I have a user name of extreme proportion".len() + long.len()
    );
    assert_eq!(
        h.from().unwrap().tag(),
        Some(format!("12{long}982424").as_str())
    );
    assert!(h.get(&format!("unknown-{long}-name")).is_some());
    r.check_mandatory().unwrap();
    assert_eq!(frame(&buf), Frame::Complete(buf.len()));
}

/// RFC 4475 3.1.1.8 "dblreq": on UDP only the first message counts.
#[test]
fn rfc4475_dblreq() {
    let r = request(&crlf(DBLREQ));
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
    assert_eq!(
        r.headers.call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
    assert_eq!(
        r.headers.contacts().unwrap()[0].uri.host,
        domain("host.example.com")
    );
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.9 "semiuri": semicolons in the user part of the Request-URI.
#[test]
fn rfc4475_semiuri() {
    let r = request(&crlf(
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
    ));
    assert_eq!(r.uri.user.as_deref(), Some("user;par=u%40example.net"));
    assert_eq!(r.uri.host, domain("example.com"));
    assert!(r.uri.params.is_empty());
    assert_eq!(
        r.uri.to_string(),
        "sip:user;par=u%40example.net@example.com"
    );
    let accept: Vec<&str> = r.headers.get_all("Accept").collect();
    assert_eq!(accept.len(), 6);
    assert_eq!(accept[5], "message/sipfrag");
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.10 "transports": Vias with several transports, some sharing a line.
#[test]
fn rfc4475_transports() {
    let r = request(&crlf("OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw, SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj,SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/tcp t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

"));
    let vias = r.headers.vias().unwrap();
    let transports: Vec<&str> = vias.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(vias[3].branch(), Some("z9hG4bKasd0f3en"));
    assert_eq!(
        r.headers.call_id().unwrap(),
        "transports.kijh4akdnaqjkwendsasfdj"
    );
    r.check_mandatory().unwrap();
}

/// RFC 4475 3.1.1.11 "mpart01": a multipart body (with binary bytes) is kept intact.
#[test]
fn rfc4475_mpart01() {
    let mut body = crlf(
        "--boundary42
Content-Type: application/sdp

v=0
--boundary42
Content-Type: application/pkcs7-signature; name=smime.p7s
Content-Transfer-Encoding: binary

",
    );
    body.extend_from_slice(&[
        0x30, 0x82, 0x01, 0x52, 0x00, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n', 0x80,
    ]);
    body.extend_from_slice(b"\r\n--boundary42--\r\n");
    let head = crlf(&format!(
        "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuL
Content-Type: multipart/mixed;boundary=\"boundary42\"
Call-ID: 0dc68373623af98a@127.0.0.1
CSeq: 2 MESSAGE
From: <sip:kumiko@example.net>;tag=2fb0dcc9
To: <sip:kumiko@example.org>
Content-Length: {}

",
        body.len()
    ));
    let buf = [head, body.clone()].concat();
    let r = request(&buf);
    assert_eq!(r.body, body);
    assert_eq!(
        r.headers.content_type(),
        Some("multipart/mixed;boundary=\"boundary42\"")
    );
    assert_eq!(r.headers.top_via().unwrap().port, Some(5070));
    r.check_mandatory().unwrap();
    assert_eq!(parse(&r.to_bytes()).unwrap(), SipMessage::Request(r));
    assert_eq!(frame(&buf), Frame::Complete(buf.len()));
}

/// RFC 4475 3.1.1.12 "unreason": UTF-8 reason phrase.
#[test]
fn rfc4475_unreason() {
    let reason = "= 2**3 * 5**2 но сто девяносто девять - простое";
    let r = response(&crlf(&format!(
        "SIP/2.0 200 {reason}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 4
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

v=0
"
    )));
    assert_eq!(r.status, 200);
    assert_eq!(r.reason, reason);
    assert_eq!(r.body, b"v=0\r");
    assert_eq!(r.headers.to().unwrap().tag(), Some("2229"));
    assert_eq!(r.headers.cseq().unwrap().method, Method::Invite);
}

/// RFC 4475 3.1.1.13 "noreason": empty reason phrase (with and without the trailing SP).
#[test]
fn rfc4475_noreason() {
    for start in ["SIP/2.0 100 ", "SIP/2.0 100"] {
        let r = response(&crlf(&format!(
            "{start}
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0

"
        )));
        assert_eq!((r.status, r.reason.as_str()), (100, ""));
        assert!(r.to_bytes().starts_with(b"SIP/2.0 100 \r\n"));
    }
}

// ---- RFC 4475 invalid messages --------------------------------------------------------------

/// RFC 4475 3.1.2.1 "badinv01": extraneous separators in Via and Contact.
#[test]
fn rfc4475_badinv01() {
    let r = request(&crlf(
        "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: 0

",
    ));
    assert!(matches!(
        r.headers.vias(),
        Err(ParseError::BadHeader("Via", _))
    ));
    assert!(matches!(
        r.check_mandatory(),
        Err(ParseError::BadHeader("Via", _))
    ));
    assert!(matches!(
        r.headers.contacts(),
        Err(ParseError::BadHeader("Contact", _))
    ));
}

/// RFC 4475 3.1.2.2/3.1.2.3 "clerr", "ncl" and multiple Content-Length values.
#[test]
fn rfc4475_content_length_errors() {
    // `minimal` ends the extra text with a line end, so the body is "v=0\r\n".
    let body = "\n\nv=0";
    for (value, extra) in [
        ("9999", ""),
        ("-999", ""),
        ("18446744073709551617", ""),
        ("1O", ""),
        ("", ""),
        ("0", "\nContent-Length: 4"),
        ("4", "\nl: 5"),
    ] {
        let buf = minimal(
            "INVITE sip:b@example.com SIP/2.0",
            &format!("Content-Length: {value}{extra}{body}"),
        );
        assert!(
            matches!(parse(&buf), Err(ParseError::ContentLength(_))),
            "{value}{extra}: {:?}",
            parse(&buf)
        );
        assert!(matches!(frame(&buf), Frame::Invalid(_) | Frame::Incomplete));
    }
    // Equal duplicates are harmless.
    let buf = minimal(
        "INVITE sip:b@example.com SIP/2.0",
        &format!("Content-Length: 5\nl: 5{body}"),
    );
    assert_eq!(request(&buf).body, b"v=0\r\n");
}

/// RFC 4475 3.1.2.4/3.1.2.5 "scalar02"/"scalarlg": overlarge scalar values.
#[test]
fn rfc4475_scalar_overflow() {
    let r = request(&crlf(
        "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

",
    ));
    assert!(matches!(
        r.headers.cseq(),
        Err(ParseError::BadHeader("CSeq", _))
    ));
    assert!(matches!(
        r.check_mandatory(),
        Err(ParseError::BadHeader("CSeq", _))
    ));
    assert!(matches!(
        r.headers.max_forwards(),
        Err(ParseError::BadHeader("Max-Forwards", _))
    ));
    assert_eq!(
        find_param(&r.headers.contacts().unwrap()[0].params, "expires"),
        Some(Some("280297596632815"))
    );

    let r = response(&crlf(
        "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
    ));
    assert!(matches!(
        r.headers.cseq(),
        Err(ParseError::BadHeader("CSeq", _))
    ));
    assert_eq!(
        r.headers.get("Warning"),
        Some("1812 overture \"In Progress\"")
    );
}

/// RFC 4475 "insuf": missing mandatory headers.
#[test]
fn rfc4475_insuf() {
    let r = request(&crlf(
        "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 0

",
    ));
    assert_eq!(r.check_mandatory(), Err(ParseError::Missing("From")));
}

/// RFC 4475 "badvers", "lwsstart", "trws", "ltgtruri", "lwsruri", "bigcode", unknown schemes.
#[test]
fn rfc4475_bad_start_lines() {
    let cases = [
        ("OPTIONS sip:t.watson@example.org SIP/7.0", "Version"),
        ("SIP/7.0 200 OK", "Version"),
        ("INVITE  sip:user@example.com  SIP/2.0", "StartLine"),
        (
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            "StartLine",
        ),
        (" INVITE sip:user@example.com SIP/2.0", "StartLine"),
        ("INVITE <sip:user@example.com> SIP/2.0", "BadUri"),
        ("INVITE sip:user@example.com; lr SIP/2.0", "StartLine"),
        (
            "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
            "UnsupportedScheme",
        ),
        (
            "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
            "UnsupportedScheme",
        ),
        (
            "SIP/2.0 4294967301 better not break the receiver",
            "StartLine",
        ),
        ("SIP/2.0 099 Too Small", "StartLine"),
        ("SIP/2.0 20 OK", "StartLine"),
        ("SIP/2.0", "StartLine"),
        ("INVITE sip:x@y", "StartLine"),
        ("HTTP/1.1 200 OK", "StartLine"),
        ("GET / HTTP/1.1", "Version"),
        ("\u{1}\u{2}garbage", "StartLine"),
    ];
    for (line, expected) in cases {
        let err = parse(&minimal(line, "Content-Length: 0\n")).unwrap_err();
        let kind = match &err {
            ParseError::Version(_) => "Version",
            ParseError::StartLine(_) => "StartLine",
            ParseError::BadUri(_) => "BadUri",
            ParseError::UnsupportedScheme(_) => "UnsupportedScheme",
            _ => "other",
        };
        assert_eq!(kind, expected, "{line:?} gave {err:?}");
    }
    assert_eq!(
        parse(&minimal("INVITE sip:x@y SIP/7.0", "")),
        Err(ParseError::Version("SIP/7.0".into()))
    );
    assert!(matches!(parse(b""), Err(ParseError::StartLine(_))));
    assert!(matches!(parse(b"\r\n\r\n"), Err(ParseError::StartLine(_))));
}

/// Header syntax errors and non-UTF-8 in the header section.
#[test]
fn bad_header_syntax() {
    for extra in ["No colon here\n", "Bad Name: x\n", ": no name\n"] {
        let buf = minimal("OPTIONS sip:x@y SIP/2.0", extra);
        assert!(
            matches!(parse(&buf), Err(ParseError::HeaderSyntax(_))),
            "{extra}"
        );
    }
    // A bare CR inside a value (a Call-ID here) is no header's syntax: kept, it would be
    // printed as a space, and the dialog's Call-ID would not be the one the peer sees. A CR
    // before a folded line's LF is a line end, as ever.
    let buf = String::from_utf8(minimal("OPTIONS sip:x@y SIP/2.0", ""))
        .unwrap()
        .replace("Call-ID: bad.1", "Call-ID: ba\rd.1")
        .into_bytes();
    assert!(
        matches!(parse(&buf), Err(ParseError::HeaderSyntax(_))),
        "{buf:?}"
    );
    let folded = minimal("OPTIONS sip:x@y SIP/2.0", "Subject: a\n b\n");
    assert_eq!(request(&folded).headers.get("Subject"), Some("a b"));
    // A continuation line right after the start line has nothing to continue.
    let buf = crlf("OPTIONS sip:x@y SIP/2.0\n Via: SIP/2.0/UDP h\n\n");
    assert!(matches!(parse(&buf), Err(ParseError::HeaderSyntax(_))));
    let mut buf = minimal("OPTIONS sip:x@y SIP/2.0", "Subject: caf\u{e9}\n");
    let at = buf.iter().position(|&b| b == 0xc3).unwrap();
    buf[at] = 0xff;
    assert!(matches!(parse(&buf), Err(ParseError::StartLine(_))));
    // Non-UTF-8 in the body is fine.
    let mut buf = minimal("OPTIONS sip:x@y SIP/2.0", "Content-Length: 2\n");
    buf.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(request(&buf).body, [0xff, 0xfe]);
}

/// RFC 4475 "quotbal", "badaspec", "baddn", "regbadct", "mismatch01/02", "multi01".
#[test]
fn rfc4475_bad_header_values() {
    let r = request(&minimal("OPTIONS sip:x@y SIP/2.0", "Content-Length: 0\n"));
    let with = |name: &str, value: &str| {
        let mut r = r.clone();
        r.headers.set(name, value);
        r
    };
    let quotbal = with("To", "\"Mr. J. User <sip:j.user@example.com>");
    assert!(matches!(
        quotbal.headers.to(),
        Err(ParseError::BadHeader("To", _))
    ));
    let badaspec = with("To", "\"Watson, Thomas\" < sip:t.watson@example.org >");
    assert!(matches!(
        badaspec.check_mandatory(),
        Err(ParseError::BadHeader("To", _))
    ));
    let baddn = with("From", "Bell, Alexander <sip:a.g.bell@example.com>;tag=43");
    assert!(matches!(
        baddn.check_mandatory(),
        Err(ParseError::BadHeader("From", _))
    ));
    let regbadct = with(
        "Contact",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
    );
    assert!(matches!(
        regbadct.headers.contacts(),
        Err(ParseError::BadHeader("Contact", _))
    ));
    // The same URI in <> is fine (RFC 4475 regescrt).
    let regescrt = with(
        "Contact",
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
    );
    assert_eq!(
        regescrt.headers.contacts().unwrap()[0]
            .uri
            .headers
            .as_deref(),
        Some("Route=%3Csip:sip.example.com%3E")
    );
    // The minimal request says CSeq INVITE but is an OPTIONS.
    assert_eq!(r.check_mandatory(), Err(ParseError::CSeqMethodMismatch));
    let mismatch02 = request(&minimal("NEWMETHOD sip:x@y SIP/2.0", "Content-Length: 0\n"));
    assert_eq!(
        mismatch02.check_mandatory(),
        Err(ParseError::CSeqMethodMismatch)
    );

    let multi01 = request(&crlf(
        "INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
l: 0

",
    ));
    assert_eq!(
        multi01.check_mandatory(),
        Err(ParseError::BadHeader("From", "multiple values".into()))
    );
}

// ---- robustness -----------------------------------------------------------------------------

/// Calls everything a caller might call on a parsed message; must never panic, and whatever
/// parses must print back into something that parses.
fn exercise(msg: &SipMessage) {
    let h = msg.headers();
    if let Ok(vias) = h.vias() {
        for via in vias {
            assert_eq!(Via::parse(&via.to_string()).as_ref(), Ok(&via));
            let _ = via.branch();
        }
    }
    let _ = h.top_via();
    for addr in [h.from(), h.to()].into_iter().flatten() {
        assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
        let _ = addr.tag();
    }
    for list in [h.contacts(), h.routes(), h.record_routes()] {
        for addr in list.into_iter().flatten() {
            assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
        }
    }
    let _ = (
        h.call_id(),
        h.max_forwards(),
        h.content_type(),
        h.contact_is_wildcard(),
    );
    if let Ok(cseq) = h.cseq() {
        assert_eq!(CSeq::parse(&cseq.to_string()).as_ref(), Ok(&cseq));
    }
    match msg {
        SipMessage::Request(r) => {
            if let Err(e) = r.check_mandatory() {
                assert!(!e.to_string().contains(['\r', '\n']));
            }
            assert_eq!(Uri::parse(&r.uri.to_string()).as_ref(), Ok(&r.uri));
            let _ = Response::for_request(r, 400, "Bad").to_bytes();
        }
        SipMessage::Response(_) => {}
    }
    let printed = msg.to_bytes();
    let again = parse(&printed).unwrap_or_else(|e| panic!("reprint of {msg:?} fails: {e:?}"));
    let names = |m: &SipMessage| -> Vec<String> {
        m.headers()
            .0
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| h.name.to_string())
            .collect()
    };
    assert_eq!(names(&again), names(msg));
    // What we print is what we parsed: a peer sees the Call-ID, tags and branches we keep.
    let values = |m: &SipMessage| -> Vec<(String, String)> {
        m.headers()
            .0
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| (h.name.to_string(), h.value.clone()))
            .collect()
    };
    assert_eq!(values(&again), values(msg), "reprinted {msg:?}");
    match (msg, &again) {
        (SipMessage::Request(a), SipMessage::Request(b)) => {
            assert_eq!((&a.method, &a.uri, &a.body), (&b.method, &b.uri, &b.body));
        }
        (SipMessage::Response(a), SipMessage::Response(b)) => {
            assert_eq!((a.status, &a.body), (b.status, &b.body));
        }
        _ => panic!("reprint changed the message kind"),
    }
}

fn try_all(buf: &[u8]) {
    match parse(buf) {
        Ok(msg) => exercise(&msg),
        Err(e) => assert!(!e.to_string().contains(['\r', '\n'])),
    }
    if let Frame::Complete(len) | Frame::KeepAlive(len) = frame(buf) {
        assert!(len <= buf.len());
    }
}

fn fuzz_corpus() -> Vec<Vec<u8>> {
    vec![
        basic_invite(),
        crlf(DBLREQ),
        minimal("OPTIONS sip:x@[::1]:5060;lr SIP/2.0", "Contact: \"a\\\"b\" <sip:c@d>;q=1, <sips:e@f?x=y>\nl: 0\n"),
        crlf("SIP/2.0 180 Ringing\nv: SIP/2.0/UDP [2001:db8::1]:5060 ; branch = z9hG4bK1 ; rport=5\nf: \"A\" <sip:a@b>;tag=1\nt: sip:b@c;tag=2\ni: x\nCSeq: 1 INVITE\nRecord-Route: <sip:p;lr>,<sip:q;lr>\nl: 3\n\nabc"),
        b"REGISTER tel:+1234;x=y SIP/2.0\nVia: SIP/2.0/TCP h\n ;branch=z9hG4bK2\nTo: <tel:+1234>\nContact: *\nContent-Length: 0\n\n".to_vec(),
    ]
}

#[test]
fn fuzz_prefixes_and_single_byte_mutations() {
    for msg in fuzz_corpus() {
        for len in 0..=msg.len() {
            try_all(&msg[..len]);
        }
        for pos in 0..msg.len() {
            for byte in [
                0x00, b':', b' ', b'\n', b'\r', 0xff, b'"', b'<', b'>', b',', b';', b'[', b'\\',
                0xc3,
            ] {
                let mut mutated = msg.clone();
                mutated[pos] = byte;
                try_all(&mutated);
            }
        }
    }
}

#[test]
fn fuzz_random_multi_byte_mutations() {
    // Deterministic xorshift so failures reproduce.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const INTERESTING: &[u8] = b"\r\n\t :;,=<>\"\\[]@/?%0123456789abcSIP\xff\xc3\xa9\x00";
    for msg in fuzz_corpus() {
        for _ in 0..2000 {
            let mut mutated = msg.clone();
            for _ in 0..1 + next() % 6 {
                let pos = (next() % mutated.len() as u64) as usize;
                let byte = INTERESTING[(next() % INTERESTING.len() as u64) as usize];
                match next() % 3 {
                    0 => mutated[pos] = byte,
                    1 => mutated.insert(pos, byte),
                    _ => {
                        mutated.remove(pos);
                    }
                }
                if mutated.is_empty() {
                    mutated.push(byte);
                }
            }
            try_all(&mutated);
        }
    }
}

/// Found by the `sip_message` fuzz target (print → parse changed the message): a CR inside the
/// start line was kept in the reason phrase, and the printer writes it as a space.
#[test]
fn a_cr_inside_the_start_line_is_refused() {
    assert!(matches!(
        parse(b"SIP/2.0 200 O\rK\r\nCall-ID: c\r\n\r\n"),
        Err(ParseError::StartLine(_))
    ));
    // CRLF, a bare LF and a CR ending a datagram without a blank line still end lines.
    let lenient = parse(b"SIP/2.0 200 OK\r\nCall-ID: c\nCSeq: 1 BYE\r").unwrap();
    assert_eq!(lenient.headers().get("CSeq"), Some("1 BYE"));
}
