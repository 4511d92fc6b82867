//! End to end: call recording and the recording API (seed 04). Real SIP calls from a hand UAC
//! to the real binary on loopback, recorded by route policy into real files, found and
//! managed over `/verba/api`, with the store (SQLite) read back to check what the API cannot
//! show (audit rows).

// The store is read here from the test's own process, read-only: the page-cache wrapper that
// clippy.toml's rule protects (every connection through `store::pcache::connect`) is the
// server's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::uac::{self, Uac};
use common::{client, write_tone_wav, Server};

const KEY: &str = "74c8eea0-50c6-40b2-9f3e-252ed501c3c8";
const SECURE_KEY: &str = "0b7d5c1e-secure-key-needs-token";

/// The API keys every server here has: one open, one that needs a token.
fn api_keys() -> String {
    format!(
        "[[recording.api_key]]\nkey = \"{KEY}\"\n\
         [[recording.api_key]]\nkey = \"{SECURE_KEY}\"\nauthentication = true\n"
    )
}

fn routes(record: &str) -> String {
    format!(
        "[[route]]\nuser = \"^rec$\"\nservice = \"echo\"\nrecord = \"{record}\"\n\
         [[route]]\nuser = \"^annc$\"\nservice = \"announcement\"\nprompt = \"tone-440.wav\"\nrecord = \"{record}\"\n\
         [[route]]\nuser = \"^conf=(?P<conference>[^@;]+)$\"\nservice = \"conference\"\nrecord = \"{record}\"\n{}",
        api_keys()
    )
}

/// A server with the recording routes and a 440 Hz prompt (2 s).
fn server(record: &str, overrides: &[&str]) -> (Server, tempfile::TempDir) {
    let prompts = tempfile::tempdir().expect("prompt dir");
    write_tone_wav(&prompts.path().join("tone-440.wav"), 8000, 440.0, 2000);
    let dir = format!("media.prompt_dir={}", prompts.path().display());
    let mut all = vec![dir.as_str()];
    all.extend_from_slice(overrides);
    let server = Server::start_with_extra_and_overrides(&routes(record), &all);
    (server, prompts)
}

/// The recording API: GET with these parameters; the body as text.
fn verba(server: &Server, params: &[(&str, &str)]) -> String {
    let r = client()
        .get(server.url("/verba/api"))
        .query(params)
        .timeout(Duration::from_secs(90))
        .send()
        .expect("API reachable");
    assert_eq!(r.status(), 200);
    r.text().expect("text body")
}

/// The `code` attribute of an XML answer.
fn code(xml: &str) -> i32 {
    attribute(xml, "code")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no code in {xml}"))
}

fn attribute(xml: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = xml[at..].find('"')?;
    Some(xml[at..at + end].to_string())
}

/// A call in from `number` to `user`, answered: the UAC, the dialog's To tag and where
/// callbridge takes the call's RTP (its SDP answer).
fn call(server: &Server, user: &str, number: &str, name: &str) -> (Uac, String, SocketAddr) {
    let uac = Uac::new(server, name);
    let invite = uac
        .request("INVITE", user, 1, "", &format!("{name}i"), &uac.sdp("0"))
        .replace("<sip:uac@", &format!("<sip:{number}@"));
    uac.send(&invite);
    let ok = uac.final_response("INVITE");
    assert_eq!(uac::status(&ok), 200, "{ok}");
    let tag = uac::to_tag(&ok);
    uac.send(&uac.request("ACK", user, 1, &tag, &format!("{name}a"), ""));
    let media = SocketAddr::from(([127, 0, 0, 1], uac::media_port(uac::body(&ok))));
    (uac, tag, media)
}

fn hang_up(uac: &Uac, user: &str, tag: &str, name: &str) {
    uac.send(&uac.request("BYE", user, 2, tag, &format!("{name}b"), ""));
    assert_eq!(uac::status(&uac.final_response("BYE")), 200);
}

/// Sends a `hz` tone in PCMU from the UAC's RTP socket for `ms`.
fn talk(socket: &UdpSocket, to: SocketAddr, hz: f64, ms: u64) {
    common::send_tone(socket, to, 0x1234, hz, (ms / 20) as u16);
}

/// Waits for the store to have finished the call's recording (state other than recording).
fn wait_recording_state(server: &Server, call_id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = recording_states(server, call_id);
        if state.iter().any(|s| s == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recording of {call_id} never became {want}: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The states of a call's recordings, from the store itself.
fn recording_states(server: &Server, call_id: &str) -> Vec<String> {
    let db = store(server);
    let mut q = db
        .prepare("SELECT state FROM recordings WHERE call_id = ?1 ORDER BY started_ms")
        .expect("recordings table");
    q.query_map([call_id], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn store(server: &Server) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        server.dir.path().join("callbridge.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store")
}

/// A stereo WAV's format tag, rate and channels (left, right) as 16-bit samples (G.711
/// decoded).
fn read_stereo_wav(bytes: &[u8]) -> (u16, u32, Vec<i16>, Vec<i16>) {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let mut at = 12;
    let (mut tag, mut channels, mut rate) = (0u16, 0u16, 0u32);
    let mut data: &[u8] = &[];
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + size).min(bytes.len())];
        if id == b"fmt " {
            tag = u16::from_le_bytes([body[0], body[1]]);
            channels = u16::from_le_bytes([body[2], body[3]]);
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
        } else if id == b"data" {
            data = body;
        }
        at += 8 + size + (size & 1);
    }
    assert_eq!(channels, 2, "a call recording has two channels");
    let samples: Vec<i16> = match tag {
        1 => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
        7 => data.iter().map(|&c| common::ulaw_decode(c)).collect(),
        other => panic!("unexpected WAV format tag {other}"),
    };
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (tag, rate, left, right)
}

/// Decodes an Ogg Opus file to 48 kHz stereo (left, right), pre-skip removed.
fn decode_ogg_opus(bytes: &[u8]) -> (Vec<i16>, Vec<i16>) {
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
    let head = reader.read_packet_expected().expect("OpusHead");
    assert_eq!(&head.data[..8], b"OpusHead");
    let channels = head.data[9];
    assert_eq!(channels, 2, "a call recording has two channels");
    let pre_skip = usize::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let tags = reader.read_packet_expected().expect("OpusTags");
    assert_eq!(&tags.data[..8], b"OpusTags");
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).expect("decoder");
    let mut pcm = Vec::new();
    let mut frame = vec![0i16; 5760 * 2];
    while let Some(packet) = reader.read_packet().expect("Ogg pages") {
        let n = decoder
            .decode(&packet.data, &mut frame, false)
            .expect("Opus packet");
        pcm.extend_from_slice(&frame[..n * 2]);
    }
    let pcm = &pcm[(pre_skip * 2).min(pcm.len())..];
    (
        pcm.iter().step_by(2).copied().collect(),
        pcm.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// Normalized Goertzel power of `hz` at `rate`.
fn power(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let n = pcm.len().max(1) as f64;
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / (n * n)
}

/// The middle half of a channel (away from call set-up and the prompt's end).
fn middle(pcm: &[i16]) -> &[i16] {
    &pcm[pcm.len() / 4..pcm.len() * 3 / 4]
}

/// Calls the announcement route from 5551000 talking 1 kHz; returns the recording's callID
/// once the store has finished it.
fn record_an_announcement_call(server: &Server, name: &str) -> String {
    let (uac, tag, uac_media) = call(server, "annc", "5551000", name);
    let to = uac_media;
    talk(&uac.rtp, to, 1000.0, 1800);
    // callbridge hangs up after the prompt.
    let deadline = Instant::now() + Duration::from_secs(5);
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE after the announcement");
        if let Some(msg) = uac.recv(Duration::from_millis(100)) {
            if msg.starts_with("BYE ") {
                break msg;
            }
        }
    };
    uac.send(&uac::ok_for(&bye));
    let _ = tag;
    let xml = verba(
        server,
        &[
            ("action", "GetCallID"),
            ("apiKey", KEY),
            ("extension", "5551000"),
            ("status", "last"),
        ],
    );
    assert_eq!(code(&xml), 0, "{xml}");
    let call_id = attribute(&xml, "callID").expect("callID");
    wait_recording_state(server, &call_id, "finished");
    call_id
}

fn media(server: &Server, call_id: &str) -> (Vec<u8>, Option<String>) {
    let r = client()
        .get(server.url("/verba/api"))
        .query(&[
            ("action", "GetMediaEncoded"),
            ("apiKey", KEY),
            ("callID", call_id),
        ])
        .send()
        .expect("API reachable");
    assert_eq!(r.status(), 200);
    let sha = r
        .headers()
        .get("x-recording-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r.bytes().expect("body").to_vec(), sha)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_recorded_call_has_the_caller_on_the_left_and_the_prompt_on_the_right() {
    for format in ["wav", "wav-ulaw", "opus"] {
        let set = format!("recording.format=\"{format}\"");
        let (server, _prompts) = server("always", &[&set]);
        let call_id = record_an_announcement_call(&server, &format!("r-{format}"));
        let (bytes, sha) = media(&server, &call_id);
        // The bytes are the file's, and the store's SHA-256 says so.
        assert_eq!(
            sha.as_deref(),
            Some(sha256_hex(&bytes).as_str()),
            "{format}"
        );
        let db = store(&server);
        let (path, stored_sha, duration): (String, String, i64) = db
            .query_row(
                "SELECT path, sha256, duration_ms FROM recordings WHERE call_id = ?1",
                [&call_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("the recording's row");
        assert_eq!(std::fs::read(&path).expect("the file"), bytes, "{format}");
        assert_eq!(stored_sha, sha256_hex(&bytes));
        assert!(
            (1500..=4000).contains(&duration),
            "{format}: duration {duration} ms"
        );
        let (rate, left, right) = if format == "opus" {
            assert!(path.ends_with(".opus"), "{path}");
            let (l, r) = decode_ogg_opus(&bytes);
            (48_000, l, r)
        } else {
            let (tag, rate, l, r) = read_stereo_wav(&bytes);
            assert_eq!(tag, if format == "wav" { 1 } else { 7 }, "{format}");
            (rate, l, r)
        };
        let (l, r) = (middle(&left), middle(&right));
        let (l1k, l440) = (power(l, rate, 1000.0), power(l, rate, 440.0));
        let (r1k, r440) = (power(r, rate, 1000.0), power(r, rate, 440.0));
        assert!(
            l1k > 10.0 * l440 && l1k > 1e5,
            "{format}: the caller's 1 kHz is on the left ({l1k:.0} vs {l440:.0})"
        );
        assert!(
            r440 > 10.0 * r1k && r440 > 1e5,
            "{format}: the prompt's 440 Hz is on the right ({r440:.0} vs {r1k:.0})"
        );
    }
}

fn get_call_id(server: &Server, params: &[(&str, &str)]) -> String {
    let mut all = vec![("action", "GetCallID"), ("apiKey", KEY)];
    all.extend_from_slice(params);
    verba(server, &all)
}

#[test]
fn every_selector_and_status_finds_its_call_and_more_than_one_is_an_error() {
    let (server, _prompts) = server("always", &[]);
    // An ongoing call from 5552000.
    let (a, a_tag, _) = call(&server, "rec", "5552000", "sel-a");
    let xml = get_call_id(&server, &[("extension", "5552000"), ("status", "ongoing")]);
    assert_eq!(code(&xml), 0, "{xml}");
    let a_id = attribute(&xml, "callID").unwrap();
    // The same call by its internal ID, its SIP Call-ID and its ConnID.
    assert_eq!(
        attribute(&get_call_id(&server, &[("callID", &a_id)]), "callID").as_deref(),
        Some(a_id.as_str())
    );
    let by_platform = get_call_id(&server, &[("platformCallID", &a.call_id)]);
    assert_eq!(
        attribute(&by_platform, "callID").as_deref(),
        Some(a_id.as_str()),
        "{by_platform}"
    );
    let calls = server.get("/callcontrol/calls");
    let conn_id = calls["Calls"][0]["ConnID"]
        .as_str()
        .expect("ConnID")
        .to_string();
    let by_native = get_call_id(&server, &[("nativeID", &conn_id)]);
    assert_eq!(
        attribute(&by_native, "callID").as_deref(),
        Some(a_id.as_str()),
        "{by_native}"
    );
    // `last` finds nothing yet; `last,ongoing` falls back to the ongoing call.
    let xml = get_call_id(&server, &[("extension", "5552000"), ("status", "last")]);
    assert_eq!(code(&xml), -50, "{xml}");
    assert!(
        xml.contains("Call for extension 5552000 with status last not found after 1 tries"),
        "{xml}"
    );
    let xml = get_call_id(
        &server,
        &[("extension", "5552000"), ("status", "last,ongoing")],
    );
    assert_eq!(
        attribute(&xml, "callID").as_deref(),
        Some(a_id.as_str()),
        "{xml}"
    );
    // A second ongoing call of the number: ambiguous.
    let (b, b_tag, _) = call(&server, "rec", "5552000", "sel-b");
    let xml = get_call_id(&server, &[("extension", "5552000"), ("status", "ongoing")]);
    assert_eq!(code(&xml), -51, "{xml}");
    hang_up(&b, "rec", &b_tag, "sel-b");
    // Not in the same millisecond: two calls ending at once are both "last" (ambiguous).
    std::thread::sleep(Duration::from_millis(20));
    hang_up(&a, "rec", &a_tag, "sel-a");
    // Now `last` is the call that ended last (b ended first, then a).
    let xml = get_call_id(&server, &[("extension", "5552000"), ("status", "last")]);
    assert_eq!(
        attribute(&xml, "callID").as_deref(),
        Some(a_id.as_str()),
        "{xml}"
    );
    // The called number is a participant too.
    let xml = get_call_id(&server, &[("extension", "rec"), ("status", "last")]);
    assert_eq!(code(&xml), 0, "{xml}");

    // Two legs of one meeting: the meeting ID alone is ambiguous, with the extension it is not.
    let (c, c_tag, _) = call(&server, "conf=board", "5553000", "sel-c");
    let (d, d_tag, _) = call(&server, "conf=board", "5554000", "sel-d");
    let xml = get_call_id(&server, &[("meetingID", "board")]);
    assert_eq!(code(&xml), -51, "{xml}");
    let xml = get_call_id(
        &server,
        &[
            ("meetingID", "board"),
            ("extension", "5554000"),
            ("status", "ongoing"),
        ],
    );
    assert_eq!(code(&xml), 0, "{xml}");
    hang_up(&c, "conf=board", &c_tag, "sel-c");
    hang_up(&d, "conf=board", &d_tag, "sel-d");

    // `next`: the request waits for a call that starts after it.
    let url = server.url("/verba/api");
    let waiting = std::thread::spawn(move || {
        client()
            .get(url)
            .query(&[
                ("action", "GetCallID"),
                ("apiKey", KEY),
                ("extension", "5555000"),
                ("status", "ongoing,next"),
            ])
            .timeout(Duration::from_secs(90))
            .send()
            .expect("API reachable")
            .text()
            .expect("text")
    });
    std::thread::sleep(Duration::from_millis(2500));
    let (e, e_tag, _) = call(&server, "rec", "5555000", "sel-e");
    let xml = waiting.join().expect("the waiting request");
    assert_eq!(code(&xml), 0, "{xml}");
    let ongoing = get_call_id(&server, &[("extension", "5555000"), ("status", "ongoing")]);
    assert_eq!(attribute(&xml, "callID"), attribute(&ongoing, "callID"));
    hang_up(&e, "rec", &e_tag, "sel-e");

    // Selector rules and response types.
    assert_eq!(code(&get_call_id(&server, &[])), -4);
    assert_eq!(code(&get_call_id(&server, &[("extension", "5552000")])), -4);
    assert_eq!(
        code(&get_call_id(
            &server,
            &[("extension", "5552000"), ("status", "sometimes")]
        )),
        -3
    );
    let missing = get_call_id(
        &server,
        &[("callID", "a8343631-9f35-4a3a-83f0-9e81592339fb")],
    );
    assert_eq!(code(&missing), -50, "{missing}");
    assert!(
        missing.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{missing}"
    );
    assert!(missing.contains("<ErrorMessage>"), "{missing}");
    let text = get_call_id(&server, &[("callID", &a_id), ("responseType", "TEXT")]);
    assert!(text.contains("code=0") && text.contains(&a_id), "{text}");
    let html = get_call_id(&server, &[("callID", &a_id), ("responseType", "html")]);
    assert!(html.contains("<html") && html.contains(&a_id), "{html}");
    let search = verba(
        &server,
        &[
            ("action", "SearchCalls"),
            ("apiKey", KEY),
            ("start", "2000-01-01 00:00"),
            ("end", "2100-01-01 00:00"),
            ("extension", "5552000"),
        ],
    );
    assert_eq!(code(&search), 0, "{search}");
    assert_eq!(
        attribute(&search, "total").as_deref(),
        Some("2"),
        "{search}"
    );
    // POST takes the same parameters as a form.
    let posted = client()
        .post(server.url("/verba/api"))
        .form(&[
            ("action", "GetCallID"),
            ("apiKey", KEY),
            ("callID", a_id.as_str()),
        ])
        .send()
        .expect("API reachable")
        .text()
        .unwrap();
    assert_eq!(code(&posted), 0, "{posted}");
}

#[test]
fn on_demand_calls_are_discarded_unless_kept_and_delete_call_marks_or_deletes() {
    let (server, _prompts) = server("on-demand", &[]);
    // Not kept: the file goes when the call ends; the row says deleted, the audit says why.
    let (a, a_tag, a_media) = call(&server, "rec", "5561000", "od-a");
    let to = a_media;
    talk(&a.rtp, to, 1000.0, 400);
    let a_id = attribute(
        &get_call_id(&server, &[("extension", "5561000"), ("status", "ongoing")]),
        "callID",
    )
    .unwrap();
    let a_path = recording_path(&server, &a_id);
    assert!(Path::new(&a_path).exists(), "recorded while the call lasts");
    hang_up(&a, "rec", &a_tag, "od-a");
    wait_recording_state(&server, &a_id, "deleted");
    assert!(
        !Path::new(&a_path).exists(),
        "an on-demand call nobody kept leaves no file"
    );
    assert_eq!(audit(&server, &a_id), ["on-demand"]);

    // Kept during the call: it stays.
    let (b, b_tag, b_media) = call(&server, "rec", "5562000", "od-b");
    talk(&b.rtp, b_media, 1000.0, 400);
    let kept = verba(
        &server,
        &[
            ("action", "KeepCall"),
            ("apiKey", KEY),
            ("extension", "5562000"),
            ("status", "ongoing"),
        ],
    );
    assert_eq!(code(&kept), 0, "{kept}");
    assert!(
        !kept.contains("callID"),
        "as the seed: no more than code and type"
    );
    let b_id = attribute(
        &get_call_id(&server, &[("extension", "5562000"), ("status", "ongoing")]),
        "callID",
    )
    .unwrap();
    hang_up(&b, "rec", &b_tag, "od-b");
    wait_recording_state(&server, &b_id, "kept");
    let b_path = recording_path(&server, &b_id);
    assert!(Path::new(&b_path).exists());
    // KeepCall after the discard is an error.
    let late = verba(
        &server,
        &[("action", "KeepCall"), ("apiKey", KEY), ("callID", &a_id)],
    );
    assert_eq!(code(&late), -53, "{late}");

    // DeleteCall on a finished call: the file goes at once, the audit row stays.
    let deleted = verba(
        &server,
        &[("action", "DeleteCall"), ("apiKey", KEY), ("callID", &b_id)],
    );
    assert_eq!(code(&deleted), 0, "{deleted}");
    assert_eq!(deleted.trim_end(), format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VerbaApi>\n<Response code=\"0\" type=\"DeleteCall\" />\n</VerbaApi>"
    ));
    assert!(
        !Path::new(&b_path).exists(),
        "DeleteCall removes a finished call's file"
    );
    assert_eq!(recording_states(&server, &b_id), ["deleted"]);
    assert_eq!(audit(&server, &b_id), [format!("api-key:{}", &KEY[..8])]);

    // DeleteCall on an ongoing (kept) call: marked, and no file remains at the end.
    let (c, c_tag, c_media) = call(&server, "rec", "5563000", "od-c");
    talk(&c.rtp, c_media, 1000.0, 300);
    let keep = verba(
        &server,
        &[
            ("action", "KeepCall"),
            ("apiKey", KEY),
            ("extension", "5563000"),
            ("status", "ongoing"),
        ],
    );
    assert_eq!(code(&keep), 0, "{keep}");
    let c_id = attribute(
        &get_call_id(&server, &[("extension", "5563000"), ("status", "ongoing")]),
        "callID",
    )
    .unwrap();
    let mark = verba(
        &server,
        &[("action", "DeleteCall"), ("apiKey", KEY), ("callID", &c_id)],
    );
    assert_eq!(code(&mark), 0, "{mark}");
    assert_eq!(recording_states(&server, &c_id), ["marked-for-deletion"]);
    talk(&c.rtp, c_media, 1000.0, 300);
    hang_up(&c, "rec", &c_tag, "od-c");
    wait_recording_state(&server, &c_id, "deleted");
    assert!(!Path::new(&recording_path(&server, &c_id)).exists());
    let media = verba(
        &server,
        &[
            ("action", "GetMediaEncoded"),
            ("apiKey", KEY),
            ("callID", &c_id),
        ],
    );
    assert_eq!(code(&media), -52, "{media}");
}

fn recording_path(server: &Server, call_id: &str) -> String {
    store(server)
        .query_row(
            "SELECT path FROM recordings WHERE call_id = ?1",
            [call_id],
            |r| r.get(0),
        )
        .expect("a recording row")
}

/// Who deleted a call's recordings, from the audit rows.
fn audit(server: &Server, call_id: &str) -> Vec<String> {
    let db = store(server);
    let mut q = db
        .prepare("SELECT \"by\" FROM deletions WHERE call_id = ?1 ORDER BY at_ms")
        .expect("deletions table");
    q.query_map([call_id], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn muted_spans_are_silence_in_both_channels_and_listed_in_the_store() {
    let (server, _prompts) = server("always", &[]);
    let (a, a_tag, a_media) = call(&server, "rec", "5571000", "mute");
    let to = a_media;
    talk(&a.rtp, to, 1000.0, 1000);
    let mute = |m: &str| {
        verba(
            &server,
            &[
                ("action", "MuteRecording"),
                ("apiKey", KEY),
                ("extension", "5571000"),
                ("status", "ongoing"),
                ("mute", m),
            ],
        )
    };
    let muted = mute("3");
    assert_eq!(code(&muted), 0, "{muted}");
    let call_id = attribute(&muted, "callID").unwrap();
    talk(&a.rtp, to, 1000.0, 1000);
    assert_eq!(code(&mute("0")), 0);
    talk(&a.rtp, to, 1000.0, 1000);
    hang_up(&a, "rec", &a_tag, "mute");
    wait_recording_state(&server, &call_id, "finished");
    let (bytes, _) = media(&server, &call_id);
    let (_, rate, left, right) = read_stereo_wav(&bytes);
    let second = |pcm: &[i16], s: usize| -> Vec<i16> {
        let n = rate as usize;
        pcm[(s * n + n / 5).min(pcm.len())..((s + 1) * n - n / 5).min(pcm.len())].to_vec()
    };
    assert!(
        power(&second(&left, 0), rate, 1000.0) > 1e5,
        "first second: the caller"
    );
    assert!(
        power(&second(&left, 2), rate, 1000.0) > 1e5,
        "last second: the caller"
    );
    let quiet = second(&left, 1);
    assert!(!quiet.is_empty());
    assert!(
        quiet.iter().all(|&s| s == 0) && second(&right, 1).iter().all(|&s| s == 0),
        "the muted second is silence in both channels"
    );
    let (channels, from, to): (i64, i64, Option<i64>) = store(&server)
        .query_row(
            "SELECT m.channels, m.from_ms, m.to_ms FROM mutes m JOIN recordings r \
             ON r.recording_id = m.recording_id WHERE r.call_id = ?1",
            [&call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the muted span");
    assert_eq!(channels, 3);
    let to = to.expect("the span ended");
    assert!(
        (700..=1600).contains(&(to - from)),
        "a second muted: {from}..{to}"
    );
    // Muting a finished call is refused.
    assert_eq!(code(&mute("3")), -50);
    let finished = verba(
        &server,
        &[
            ("action", "MuteRecording"),
            ("apiKey", KEY),
            ("callID", &call_id),
            ("mute", "1"),
        ],
    );
    assert_eq!(code(&finished), -53, "{finished}");
}

#[test]
fn api_keys_and_tokens_guard_every_action_alike() {
    let (server, _prompts) = server("always", &[]);
    let (ok, out) = server.ctl(&["users", "add", "auditor", "--password", "s3cret-pass"]);
    assert!(ok, "{out}");
    let (ok, out) = server.ctl(&["users", "list"]);
    assert!(ok && out.contains("auditor"), "{out}");
    let (a, a_tag, _) = call(&server, "rec", "5581000", "auth");
    let existing = attribute(
        &get_call_id(&server, &[("extension", "5581000"), ("status", "ongoing")]),
        "callID",
    )
    .unwrap();
    let unknown = "a8343631-9f35-4a3a-83f0-9e81592339fb";
    for id in [existing.as_str(), unknown] {
        let missing = verba(&server, &[("action", "DeleteCall"), ("callID", id)]);
        assert_eq!(code(&missing), -10, "{missing}");
        let wrong = verba(
            &server,
            &[
                ("action", "DeleteCall"),
                ("apiKey", "not-a-key-at-all"),
                ("callID", id),
            ],
        );
        assert_eq!(code(&wrong), -10, "{wrong}");
        let no_token = verba(
            &server,
            &[
                ("action", "DeleteCall"),
                ("apiKey", SECURE_KEY),
                ("callID", id),
            ],
        );
        assert_eq!(code(&no_token), -11, "{no_token}");
        let bad_token = verba(
            &server,
            &[
                ("action", "DeleteCall"),
                ("apiKey", SECURE_KEY),
                ("token", "09835e02-6c10-11e0-bb22-ba324924019b"),
                ("callID", id),
            ],
        );
        assert_eq!(code(&bad_token), -11, "{bad_token}");
        // The same answer whether or not the call exists.
        assert_eq!(
            missing,
            verba(&server, &[("action", "DeleteCall"), ("callID", unknown)])
        );
    }
    // RequestToken: Basic credentials of a stored user.
    let token_of = |user: &str, password: &str| {
        client()
            .get(server.url("/verba/api"))
            .query(&[("action", "RequestToken"), ("apiKey", SECURE_KEY)])
            .basic_auth(user, Some(password))
            .send()
            .expect("API reachable")
            .text()
            .unwrap()
    };
    assert_eq!(code(&token_of("auditor", "wrong")), -12);
    assert_eq!(code(&token_of("nobody", "s3cret-pass")), -12);
    let granted = token_of("auditor", "s3cret-pass");
    assert_eq!(code(&granted), 0, "{granted}");
    let token = attribute(&granted, "token").expect("token");
    // The token is the secure key's only: with another key it means nothing.
    let found = verba(
        &server,
        &[
            ("action", "GetCallID"),
            ("apiKey", SECURE_KEY),
            ("token", &token),
            ("callID", &existing),
        ],
    );
    assert_eq!(code(&found), 0, "{found}");
    // A removed user's password no longer gets tokens.
    let (ok, out) = server.ctl(&["users", "remove", "auditor"]);
    assert!(ok, "{out}");
    assert_eq!(code(&token_of("auditor", "s3cret-pass")), -12);
    hang_up(&a, "rec", &a_tag, "auth");
}

#[test]
fn a_recording_survives_kill_9_and_the_store_is_consistent_after_restart() {
    let keep = tempfile::tempdir().expect("state dir");
    let db = format!(
        "store.path=\"{}\"",
        keep.path().join("callbridge.db").display()
    );
    let calls = format!("recording.dir=\"{}\"", keep.path().join("calls").display());
    let (mut server, prompts) = server("always", &[&db, &calls]);
    let (a, _tag, a_media) = call(&server, "rec", "5591000", "kill");
    let to = a_media;
    talk(&a.rtp, to, 1000.0, 2500);
    let call_id = attribute(
        &get_call_id(&server, &[("extension", "5591000"), ("status", "ongoing")]),
        "callID",
    )
    .unwrap();
    server.signal(libc::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(5));
    drop(server);
    let dir = format!("media.prompt_dir={}", prompts.path().display());
    let restarted = Server::start_with_extra_and_overrides(&routes("always"), &[&dir, &db, &calls]);
    let conn = rusqlite::Connection::open_with_flags(
        keep.path().join("callbridge.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (state, duration, ended, cause): (String, i64, Option<i64>, Option<String>) = conn
        .query_row(
            "SELECT r.state, r.duration_ms, c.ended_ms, c.end_cause FROM recordings r \
             JOIN calls c ON c.call_id = r.call_id WHERE r.call_id = ?1",
            [&call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the recording's row");
    assert_eq!(state, "finished");
    assert!(ended.is_some(), "the killed call ended at the restart");
    assert_eq!(cause.as_deref(), Some("restart"));
    // The sync once a second keeps all but the last second of 2.5 s.
    assert!(
        (1000..=3500).contains(&duration),
        "duration from the file: {duration} ms"
    );
    let (bytes, sha) = {
        let r = client()
            .get(restarted.url("/verba/api"))
            .query(&[
                ("action", "GetMediaEncoded"),
                ("apiKey", KEY),
                ("callID", call_id.as_str()),
            ])
            .send()
            .unwrap();
        let sha = r
            .headers()
            .get("x-recording-sha256")
            .map(|v| v.to_str().unwrap().to_string());
        (r.bytes().unwrap().to_vec(), sha)
    };
    assert_eq!(sha.as_deref(), Some(sha256_hex(&bytes).as_str()));
    let (_, rate, left, _) = read_stereo_wav(&bytes);
    assert!(
        power(middle(&left), rate, 1000.0) > 1e5,
        "the caller is in the repaired file"
    );
}

#[test]
fn a_full_disk_stops_the_recording_with_an_event_and_the_call_goes_on() {
    let (server, _prompts) = {
        let prompts = tempfile::tempdir().expect("prompt dir");
        write_tone_wav(&prompts.path().join("tone-440.wav"), 8000, 440.0, 2000);
        let dir = format!("media.prompt_dir={}", prompts.path().display());
        // The test-only fault hook: recording writes fail as a full disk after 40 kB.
        let server = Server::launch_with(
            &routes("always"),
            &[&dir],
            &[("CALLBRIDGE_TEST_DISK_LIMIT_BYTES", "40000")],
        );
        (server, prompts)
    };
    let mut events = server.events();
    let (a, a_tag, a_media) = call(&server, "rec", "5601000", "full");
    let to = a_media;
    talk(&a.rtp, to, 1000.0, 3000);
    let stopped = events.wait_for(Duration::from_secs(5), |e| e["Event"] == "RecordingStopped");
    assert!(
        stopped["Error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{stopped}"
    );
    assert_eq!(server.metric("callbridge_recording_failures_total"), 1.0);
    // The call goes on: callbridge still echoes.
    a.rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while a.rtp.recv_from(&mut [0u8; 2048]).is_ok() {}
    talk(&a.rtp, to, 1000.0, 200);
    assert!(
        a.rtp.recv_from(&mut [0u8; 2048]).is_ok(),
        "the call still has media"
    );
    let call_id = stopped["RecordingCallId"].as_str().unwrap().to_string();
    hang_up(&a, "rec", &a_tag, "full");
    wait_recording_state(&server, &call_id, "finished");
    let (error, size): (Option<String>, i64) = store(&server)
        .query_row(
            "SELECT error, size_bytes FROM recordings WHERE call_id = ?1",
            [&call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(error.unwrap_or_default().contains("No space left"));
    assert!(
        size > 0 && size <= 40_000,
        "the file holds what fit: {size} bytes"
    );
    let (bytes, _) = media(&server, &call_id);
    let (_, _, left, _) = read_stereo_wav(&bytes);
    assert!(!left.is_empty(), "what was written before is a valid file");
    server.wait_no_connections(Duration::from_secs(3));
}
