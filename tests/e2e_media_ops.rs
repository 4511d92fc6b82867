//! End to end: media operations with the real binary — a SIP caller hears a played prompt
//! (audio checked), its RFC 4733 digits are gathered, StopMediaOperation ends operations with
//! `userstop` by OperationId and for all, hang-up ends them with `autostop`, and bad requests
//! get their documented result codes.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::uac::{self, Uac};
use common::{tone_power, ulaw_decode, ulaw_encode, write_tone_wav, Server};
use serde_json::{json, Value};

/// A server whose prompt directory holds `tone-600.wav` (600 Hz, 1 s, 8 kHz),
/// `long.wav` (10 s) and `sales/en/greeting.wav` (900 Hz, 16 kHz).
fn server_with_prompts() -> (Server, tempfile::TempDir) {
    let prompts = tempfile::tempdir().expect("prompt dir");
    write_tone_wav(&prompts.path().join("tone-600.wav"), 8000, 600.0, 1000);
    write_tone_wav(&prompts.path().join("long.wav"), 8000, 600.0, 10_000);
    std::fs::create_dir_all(prompts.path().join("sales/en")).unwrap();
    write_tone_wav(
        &prompts.path().join("sales/en/greeting.wav"),
        16000,
        900.0,
        600,
    );
    write_tone_wav(&prompts.path().join("cd.wav"), 44_100, 750.0, 600);
    let dir = format!("media.prompt_dir={}", prompts.path().display());
    (Server::start_with_overrides(&[&dir]), prompts)
}

/// A SIP caller on the echo service: UAC, dialog tag and callbridge's RTP address.
struct Call {
    uac: Uac,
    to_tag: String,
    server_rtp: SocketAddr,
}

fn call(server: &Server, name: &str) -> Call {
    let uac = Uac::new(server, name);
    let offer = uac.sdp("0 101").replace(
        "a=sendrecv\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
    );
    uac.send(&uac.request("INVITE", "echo", 1, "", &format!("{name}i"), &offer));
    let ok = uac.final_response("INVITE");
    assert_eq!(uac::status(&ok), 200);
    let to_tag = uac::to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &to_tag, &format!("{name}a"), ""));
    let port = uac::media_port(uac::body(&ok));
    Call {
        uac,
        to_tag,
        server_rtp: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn connection_of_only_call(server: &Server) -> String {
    server.get("/callcontrol/calls")["Calls"][0]["ConnectionId"]
        .as_str()
        .expect("ConnectionId")
        .to_string()
}

/// RTP received on `socket` for `window`, PCMU decoded (RTCP and events dropped).
fn listen(socket: &UdpSocket, window: Duration) -> Vec<i16> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let end = Instant::now() + window;
    let mut pcm = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if n < 12 || (200..=207).contains(&buf[1]) || buf[1] & 0x7f != 0 {
            continue;
        }
        pcm.extend(buf[12..n].iter().map(|&c| ulaw_decode(c)));
    }
    pcm
}

/// Sends one RFC 4733 digit (PT 101): three packets of the event, the last two with the end
/// bit, 20 ms apart.
fn send_rfc4733(socket: &UdpSocket, to: SocketAddr, digit: char, seq: &mut u16, ts: &mut u32) {
    let event = match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        _ => panic!("digit"),
    };
    for (i, duration) in [(0u8, 400u16), (1, 800), (2, 800)] {
        let end = if i > 0 { 0x80 } else { 0 };
        let mut packet = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&ts.to_be_bytes());
        packet.extend_from_slice(&0x4242_4242u32.to_be_bytes());
        packet.extend_from_slice(&[event, end | 10]);
        packet.extend_from_slice(&duration.to_be_bytes());
        socket.send_to(&packet, to).expect("send event");
        *seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    *ts = ts.wrapping_add(1600);
}

fn is(event: &Value, name: &str) -> bool {
    event["Event"] == name
}

#[test]
fn a_caller_hears_a_prompt_then_its_digits_are_gathered() {
    let (server, _prompts) = server_with_prompts();
    let mut events = server.events();
    let caller = call(&server, "ops1");
    let id = connection_of_only_call(&server);

    let (code, body) = server.action(
        "Play",
        json!({"ConnectionId": id, "Prompt1": "tone-600.wav", "State": "greeting"}),
    );
    assert_eq!(code, 200, "{body}");
    let operation = body["OperationId"]
        .as_str()
        .expect("OperationId")
        .to_string();
    let heard = listen(&caller.uac.rtp, Duration::from_millis(900));
    assert!(
        heard.len() >= 160 * 30,
        "the prompt is streamed: {}",
        heard.len()
    );
    assert!(
        tone_power(&heard, 600.0) > 1e6
            && tone_power(&heard, 600.0) > tone_power(&heard, 1500.0) * 100.0,
        "the caller hears the prompt's 600 Hz"
    );
    let done = events.wait_for(Duration::from_secs(3), |e| is(e, "Play_Complete"));
    assert_eq!(done["TerminationCondition"], "eod");
    assert_eq!(done["OperationId"], operation.as_str());
    assert_eq!(done["State"], "greeting");
    let elapsed = done["ElapsedTime"].as_u64().unwrap();
    assert!((950..=1500).contains(&elapsed), "ElapsedTime {elapsed}");

    // Double speed: the same prompt in half the time, at the same pitch.
    let (code, body) = server.action(
        "Play",
        json!({"ConnectionId": id, "Prompt1": "tone-600.wav", "Speed": 10}),
    );
    assert_eq!(code, 200, "{body}");
    let heard = listen(&caller.uac.rtp, Duration::from_millis(450));
    assert!(tone_power(&heard, 600.0) > 1e6, "the pitch is kept");
    let fast = events.wait_for(Duration::from_secs(3), |e| {
        is(e, "Play_Complete") && e["OperationId"] == body["OperationId"]
    });
    assert_eq!(fast["TerminationCondition"], "eod");
    let elapsed = fast["ElapsedTime"].as_u64().unwrap();
    assert!(
        (450..=800).contains(&elapsed),
        "half the time: {elapsed} ms"
    );

    // Digits pressed before the GatherDigits are buffered and count.
    let (mut seq, mut ts) = (100u16, 1000u32);
    send_rfc4733(&caller.uac.rtp, caller.server_rtp, '1', &mut seq, &mut ts);
    events.wait_for(Duration::from_secs(3), |e| is(e, "DigitReceived"));
    let (code, body) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondMaxDigits": 3, "CommandTimeout": 10000}),
    );
    assert_eq!(code, 200, "{body}");
    for d in ['2', '3'] {
        send_rfc4733(&caller.uac.rtp, caller.server_rtp, d, &mut seq, &mut ts);
    }
    let gathered = events.wait_for(Duration::from_secs(3), |e| is(e, "GatherDigits_Complete"));
    assert_eq!(gathered["Digits"], "123");
    assert_eq!(gathered["TerminationCondition"], "maxdigits");
    assert_eq!(gathered["ConnectionId"], id.as_str());

    // The buffer was cleared: a new gather starts empty and ends on its inter-digit delay.
    let (_, body) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondDigit": "#", "TermCondInterDigitDelay": 300}),
    );
    let second = body["OperationId"].as_str().unwrap().to_string();
    send_rfc4733(&caller.uac.rtp, caller.server_rtp, '7', &mut seq, &mut ts);
    let gathered = events.wait_for(Duration::from_secs(3), |e| {
        is(e, "GatherDigits_Complete") && e["OperationId"] == second.as_str()
    });
    assert_eq!(gathered["Digits"], "7");
    assert_eq!(gathered["TerminationCondition"], "interdigdelay");

    // Application/locale prompt directories, a 16 kHz prompt on an 8 kHz call.
    let (code, body) = server.action(
        "Play",
        json!({"ConnectionId": id, "Prompt1": "greeting.wav", "Application": "sales", "Locale": "en"}),
    );
    assert_eq!(code, 200, "{body}");
    let heard = listen(&caller.uac.rtp, Duration::from_millis(500));
    assert!(
        tone_power(&heard, 900.0) > 1e6,
        "the localized prompt plays"
    );
    events.wait_for(Duration::from_secs(3), |e| {
        is(e, "Play_Complete") && e["OperationId"] == body["OperationId"]
    });
}

#[test]
fn stop_media_operation_ends_one_or_all_with_userstop_and_hangup_ends_them_with_autostop() {
    let (server, _prompts) = server_with_prompts();
    let mut events = server.events();
    let mut caller = call(&server, "ops2");
    let id = connection_of_only_call(&server);

    let (_, play) = server.action("Play", json!({"ConnectionId": id, "Prompt1": "long.wav"}));
    let play_op = play["OperationId"].as_str().unwrap().to_string();
    let (code, body) = server.action("Play", json!({"ConnectionId": id, "Prompt1": "long.wav"}));
    assert_eq!(
        (code, body["ResultCode"].as_str()),
        (409, Some("14")),
        "one playout at a time"
    );
    assert!(tone_power(&listen(&caller.uac.rtp, Duration::from_millis(300)), 600.0) > 1e6);
    let (code, body) = server.action(
        "StopMediaOperation",
        json!({"ConnectionId": id, "OperationId": play_op}),
    );
    assert_eq!(code, 200, "{body}");
    let stopped = events.wait_for(Duration::from_secs(2), |e| is(e, "Play_Complete"));
    assert_eq!(stopped["TerminationCondition"], "userstop");
    assert!(stopped["ElapsedTime"].as_u64().unwrap() < 5000);
    // The prompt is no longer heard (the echo of silence is).
    std::thread::sleep(Duration::from_millis(100));
    let after = listen(&caller.uac.rtp, Duration::from_millis(300));
    assert!(
        tone_power(&after, 600.0) < 1e4,
        "playout stopped: {}",
        tone_power(&after, 600.0)
    );
    let (code, body) = server.action(
        "StopMediaOperation",
        json!({"ConnectionId": id, "OperationId": play_op}),
    );
    assert_eq!((code, body["ResultCode"].as_str()), (404, Some("25")));

    // Two operations at once; StopMediaOperation without OperationId stops both.
    let (_, tone) = server.action(
        "PlayTone",
        json!({"ConnectionId": id, "Frequency1": 1000, "Duration": 0, "TermCondMaxTime": 60000}),
    );
    let (_, gather) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondMaxDigits": 5}),
    );
    assert!(tone_power(&listen(&caller.uac.rtp, Duration::from_millis(300)), 1000.0) > 1e6);
    let (code, _) = server.action(
        "StopMediaOperation",
        json!({"ConnectionId": id, "Block": true}),
    );
    assert_eq!(code, 200);
    for (name, op) in [
        ("PlayTone_Complete", &tone),
        ("GatherDigits_Complete", &gather),
    ] {
        let e = events.wait_for(Duration::from_secs(2), |e| is(e, name));
        assert_eq!(e["TerminationCondition"], "userstop");
        assert_eq!(e["OperationId"], op["OperationId"]);
    }

    // A play running when the caller hangs up ends with autostop.
    let (_, play) = server.action("Play", json!({"ConnectionId": id, "Prompt1": "long.wav"}));
    let bye = caller
        .uac
        .request("BYE", "echo", 2, &caller.to_tag, "byeops", "");
    caller.uac.send(&bye);
    assert_eq!(uac::status(&caller.uac.final_response("BYE")), 200);
    let ended = events.wait_for(Duration::from_secs(3), |e| {
        is(e, "Play_Complete") && e["OperationId"] == play["OperationId"]
    });
    assert_eq!(ended["TerminationCondition"], "autostop");
    server.wait_no_connections(Duration::from_secs(3));
    caller.to_tag.clear();
}

#[test]
fn operation_requests_that_cannot_be_served_get_their_result_codes() {
    let (server, _prompts) = server_with_prompts();
    let mut events = server.events();
    let (_, created) = server.action(
        "CreateConnection",
        json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
    );
    let id = created["ConnectionId"].as_str().unwrap().to_string();
    let code_of = |action: &str, body: Value| server.action(action, body).1["ResultCode"].clone();
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": id, "Prompt1": "missing.wav"})
        ),
        "30"
    );
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": id, "Prompt1": "Hello there"})
        ),
        "35"
    );
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": id, "Prompt1": "../etc/passwd.wav"})
        ),
        "30"
    );
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": id, "Prompt1": "/etc/hostname.wav"})
        ),
        "30"
    );
    assert_eq!(code_of("Play", json!({"ConnectionId": id})), "26");
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": 999, "Prompt1": "tone-600.wav"})
        ),
        "23"
    );
    assert_eq!(
        code_of(
            "Play",
            json!({"ConnectionId": id, "Prompt1": "tone-600.wav", "Speed": 3, "Volume": 2})
        ),
        "27",
        "Volume and Speed are not changed in one Play"
    );
    assert_eq!(
        code_of("AdjustPlay", json!({"ConnectionId": id, "Speed": 2})),
        "25"
    );
    assert_eq!(
        code_of("PlayTone", json!({"ConnectionId": id, "Frequency1": 50})),
        "27"
    );
    assert_eq!(
        code_of("PlayTone", json!({"ConnectionId": id, "Duration": 0})),
        "26"
    );
    assert_eq!(
        code_of(
            "GatherDigits",
            json!({"ConnectionId": id, "TermCondDigit": "x"})
        ),
        "27"
    );
    assert_eq!(
        code_of("StopMediaOperation", json!({"ConnectionId": 999})),
        "23"
    );
    assert_eq!(
        code_of(
            "StopMediaOperation",
            json!({"ConnectionId": id, "OperationId": 4242})
        ),
        "25"
    );
    assert_eq!(
        code_of("AdjustPlay", json!({"ConnectionId": id, "Volume": 2})),
        "25"
    );
    assert_eq!(
        code_of(
            "VoiceRecognition",
            json!({"ConnectionId": id, "Grammar1": "g"})
        ),
        "8"
    );
    // SendDigits feeds the digit buffer: a gather with a pattern completes from it.
    let (code, _) = server.action("SendDigits", json!({"ConnectionId": id, "Digits": "12"}));
    assert_eq!(code, 200);
    let (_, gather) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondDigitPattern": "123", "State": "pin"}),
    );
    server.action("SendDigits", json!({"ConnectionId": id, "Digits": "3"}));
    let done = events.wait_for(Duration::from_secs(2), |e| is(e, "GatherDigits_Complete"));
    assert_eq!(done["Digits"], "123");
    assert_eq!(done["TerminationCondition"], "digitpattern");
    assert_eq!(done["OperationId"], gather["OperationId"]);
    assert_eq!(done["State"], "pin");
    let metrics = server.metrics();
    assert!(
        metrics.contains(
            "callbridge_media_operations_completed_total{action=\"GatherDigits\",termination=\"digitpattern\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("callbridge_media_operations_running 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callbridge_resources_used{kind=\"rtp\"} 1"),
        "{metrics}"
    );
    // Releasing the connection ends a running gather with autostop.
    let (_, gather) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondMaxDigits": 4}),
    );
    server.action("DeleteConnection", json!({"ConnectionId": id}));
    let done = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "GatherDigits_Complete") && e["OperationId"] == gather["OperationId"]
    });
    assert_eq!(done["TerminationCondition"], "autostop");
}

/// A PCMU packet of a `hz` tone (amplitude 0 = silence), frame `index` of a stream.
fn audio_packet(hz: f64, amplitude: f64, index: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend_from_slice(&(index as u16).to_be_bytes());
    packet.extend_from_slice(&(index * 160).to_be_bytes());
    packet.extend_from_slice(&0x0BAD_CAFEu32.to_be_bytes());
    for i in 0..160u32 {
        let t = f64::from(index * 160 + i) / 8000.0;
        packet.push(ulaw_encode(
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16,
        ));
    }
    packet
}

/// Streams `frames` 20 ms frames from frame `first` on: a tone while `loud(i)`, else silence.
fn stream(call: &Call, first: u32, frames: u32, loud: impl Fn(u32) -> bool) {
    let start = Instant::now();
    for i in 0..frames {
        let due = start + Duration::from_millis(20 * u64::from(i));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let amplitude = if loud(i) { 8000.0 } else { 0.0 };
        call.uac
            .rtp
            .send_to(&audio_packet(600.0, amplitude, first + i), call.server_rtp)
            .expect("send RTP");
    }
}

/// A mono 16-bit PCM WAV's samples (canonical 44-byte header), checking the header's sizes
/// against the file.
fn read_pcm_wav(path: &Path) -> (u32, Vec<i16>) {
    let bytes = std::fs::read(path).expect("recording exists");
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff + 8, bytes.len(), "RIFF size matches the file");
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 1, "PCM");
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    assert_eq!(&bytes[36..40], b"data");
    let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert_eq!(44 + data, bytes.len(), "data size matches the file");
    let samples = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (rate, samples)
}

fn server_with_dirs() -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let prompts = tempfile::tempdir().expect("prompt dir");
    let recordings = tempfile::tempdir().expect("recording dir");
    write_tone_wav(&prompts.path().join("tone-600.wav"), 8000, 600.0, 1000);
    let p = format!("media.prompt_dir={}", prompts.path().display());
    let r = format!("media.recording_dir={}", recordings.path().display());
    (Server::start_with_overrides(&[&p, &r]), prompts, recordings)
}

#[test]
fn a_caller_is_recorded_to_a_playable_wav_and_silence_is_detected() {
    let (server, _prompts, recordings) = server_with_dirs();
    let mut events = server.events();
    let caller = call(&server, "rec1");
    let id = connection_of_only_call(&server);

    let (code, body) = server.action(
        "Record",
        json!({"ConnectionId": id, "Filename": "calls/first.wav", "TermCondMaxTime": 1000, "State": "r"}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["Filename"], "calls/first.wav");
    stream(&caller, 0, 60, |_| true);
    let done = events.wait_for(Duration::from_secs(3), |e| is(e, "Record_Complete"));
    assert_eq!(done["TerminationCondition"], "maxtime");
    assert_eq!(done["Filename"], "calls/first.wav");
    assert_eq!(done["State"], "r");
    let (rate, samples) = read_pcm_wav(&recordings.path().join("calls/first.wav"));
    assert_eq!(rate, 8000);
    let seconds = samples.len() as f64 / 8000.0;
    assert!(
        (0.8..=1.1).contains(&seconds),
        "about one second recorded: {seconds}"
    );
    let tail = &samples[samples.len() / 4..];
    assert!(
        tone_power(tail, 600.0) > 1e6,
        "the caller's 600 Hz is in the file"
    );
    assert!(
        recordings.path().join("calls/first.wav.expires").exists(),
        "expiry noted"
    );

    // Silence then sound: DetectSilence, then DetectNonSilence.
    let (_, silence) = server.action(
        "DetectSilence",
        json!({"ConnectionId": id, "SilenceTime": 400}),
    );
    stream(&caller, 100, 40, |_| false);
    let e = events.wait_for(Duration::from_secs(2), |e| is(e, "DetectSilence_Complete"));
    assert_eq!(e["TerminationCondition"], "silence");
    assert_eq!(e["OperationId"], silence["OperationId"]);
    let (_, sound) = server.action(
        "DetectNonSilence",
        json!({"ConnectionId": id, "NonSilenceTime": 200}),
    );
    stream(&caller, 200, 10, |_| false);
    assert!(
        !events
            .drain()
            .iter()
            .any(|e| is(e, "DetectNonSilence_Complete")),
        "silence is not sound"
    );
    stream(&caller, 300, 30, |_| true);
    let e = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "DetectNonSilence_Complete")
    });
    assert_eq!(e["TerminationCondition"], "nonsilence");
    assert_eq!(e["OperationId"], sound["OperationId"]);

    // A Record stopped with Block: the answer comes after Record_Complete, file finished.
    let (_, rec) = server.action(
        "Record",
        json!({"ConnectionId": id, "AudioFileEncoding": "pcm"}),
    );
    let name = rec["Filename"].as_str().unwrap().to_string();
    stream(&caller, 400, 25, |_| true);
    let (code, _) = server.action(
        "StopMediaOperation",
        json!({"ConnectionId": id, "Block": true}),
    );
    assert_eq!(code, 200);
    let done = events.wait_for(Duration::from_millis(500), |e| {
        is(e, "Record_Complete") && e["OperationId"] == rec["OperationId"]
    });
    assert_eq!(done["TerminationCondition"], "userstop");
    let (_, samples) = read_pcm_wav(&recordings.path().join(&name));
    assert!(samples.len() >= 8000 * 3 / 10, "{} samples", samples.len());
    // Block false: the answer does not wait; Record_Complete still follows with the file.
    let (_, rec) = server.action("Record", json!({"ConnectionId": id, "Filename": "nb.wav"}));
    stream(&caller, 500, 10, |_| true);
    let (code, _) = server.action(
        "StopMediaOperation",
        json!({"ConnectionId": id, "OperationId": rec["OperationId"], "Block": false}),
    );
    assert_eq!(code, 200);
    let done = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "Record_Complete") && e["OperationId"] == rec["OperationId"]
    });
    assert_eq!(done["TerminationCondition"], "userstop");
    read_pcm_wav(&recordings.path().join("nb.wav"));
    let code_of = |body: Value| server.action("Record", body).1["ResultCode"].clone();
    assert_eq!(
        code_of(json!({"ConnectionId": id, "Filename": "../x.wav"})),
        "30"
    );
    assert_eq!(
        code_of(json!({"ConnectionId": id, "AudioFileFormat": "vox"})),
        "8"
    );
}

#[test]
fn a_recording_survives_the_process_being_killed() {
    let (mut server, _prompts, recordings) = server_with_dirs();
    let caller = call(&server, "rec2");
    let id = connection_of_only_call(&server);
    let (code, _) = server.action(
        "Record",
        json!({"ConnectionId": id, "Filename": "killed.wav", "Expires": 0}),
    );
    assert_eq!(code, 200);
    stream(&caller, 0, 90, |_| true);
    // Past at least one header sync (every second): the file is valid as it stands.
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    let path = recordings.path().join("killed.wav");
    let bytes = std::fs::read(&path).expect("recording exists");
    let declared = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert!(
        declared >= 8000 * 2 / 2,
        "synced header covers ≥ 0.5 s: {declared} bytes"
    );
    assert!(44 + declared <= bytes.len());
    assert!(
        !recordings.path().join("killed.wav.expires").exists(),
        "Expires 0: kept forever"
    );
    // A restart repairs the header to cover everything that reached the disk.
    let r = format!("media.recording_dir={}", recordings.path().display());
    let restarted = Server::start_with_overrides(&[&r]);
    let (_, samples) = read_pcm_wav(&path);
    assert_eq!(
        samples.len() * 2,
        (bytes.len() - 44) & !1,
        "every whole sample on disk at the kill is in the repaired file"
    );
    assert!(tone_power(&samples[samples.len() / 4..], 600.0) > 1e6);
    drop(restarted);
}

#[test]
fn an_announcement_call_hears_its_prompt_and_is_hung_up() {
    let prompts = tempfile::tempdir().expect("prompt dir");
    write_tone_wav(&prompts.path().join("tone-600.wav"), 8000, 600.0, 800);
    write_tone_wav(&prompts.path().join("other.wav"), 8000, 900.0, 600);
    let dir = format!("media.prompt_dir={}", prompts.path().display());
    let route =
        "[[route]]\nuser = \"^annc$\"\nservice = \"announcement\"\nprompt = \"tone-600.wav\"\n";
    let server = Server::start_with_extra_and_overrides(route, &[&dir]);
    let mut events = server.events();
    for (name, play, hz) in [("an1", None, 600.0), ("an2", Some("other.wav"), 900.0)] {
        let uac = Uac::new(&server, name);
        let mut invite = uac.request("INVITE", "annc", 1, "", &format!("{name}i"), &uac.sdp("0"));
        if let Some(prompt) = play {
            let target = format!("sip:annc@{}", uac.server);
            invite = invite.replacen(&target, &format!("{target};play={prompt}"), 1);
        }
        uac.send(&invite);
        let ok = uac.final_response("INVITE");
        assert_eq!(uac::status(&ok), 200, "{ok}");
        let tag = uac::to_tag(&ok);
        uac.send(&uac.request("ACK", "annc", 1, &tag, &format!("{name}a"), ""));
        let heard = listen(&uac.rtp, Duration::from_millis(500));
        assert!(
            tone_power(&heard, hz) > 1e6,
            "{name}: the announcement plays {hz} Hz"
        );
        // Then callbridge hangs up.
        let deadline = Instant::now() + Duration::from_secs(3);
        let bye = loop {
            assert!(
                Instant::now() < deadline,
                "{name}: no BYE after the announcement"
            );
            if let Some(msg) = uac.recv(Duration::from_millis(100)) {
                if msg.starts_with("BYE ") {
                    break msg;
                }
            }
        };
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            ok.push_str(&format!("{h}: {}\r\n", uac::header(&bye, h).unwrap()));
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        uac.send(&ok);
        let released = events.wait_for(Duration::from_secs(3), |e| {
            is(e, "ConnectionReleased") && e["Reason"] == "announcement-complete"
        });
        events.drain();
        let _ = released;
        events = server.events();
    }
    // A prompt that does not exist: 404 (RFC 4240), nothing allocated.
    let uac = Uac::new(&server, "an3");
    let target = format!("sip:annc@{}", uac.server);
    let invite = uac
        .request("INVITE", "annc", 1, "", "an3i", &uac.sdp("0"))
        .replacen(&target, &format!("{target};play=missing.wav"), 1);
    uac.send(&invite);
    assert_eq!(uac::status(&uac.final_response("INVITE")), 404);
    server.wait_no_connections(Duration::from_secs(3));
}

#[test]
fn digits_signalled_in_sip_info_reach_gather_digits() {
    let (server, _prompts) = server_with_prompts();
    let mut events = server.events();
    let caller = call(&server, "info1");
    let id = connection_of_only_call(&server);
    let (_, gather) = server.action(
        "GatherDigits",
        json!({"ConnectionId": id, "TermCondDigit": "#"}),
    );
    for (cseq, content_type, body) in [
        (2, "application/dtmf-relay", "Signal=4\r\nDuration=160\r\n"),
        (3, "application/dtmf", "#"),
    ] {
        let info = caller
            .uac
            .request(
                "INFO",
                "echo",
                cseq,
                &caller.to_tag,
                &format!("info{cseq}"),
                body,
            )
            .replace(
                "Content-Type: application/sdp",
                &format!("Content-Type: {content_type}"),
            );
        caller.uac.send(&info);
        assert_eq!(uac::status(&caller.uac.final_response("INFO")), 200);
    }
    let done = events.wait_for(Duration::from_secs(2), |e| is(e, "GatherDigits_Complete"));
    assert_eq!(done["Digits"], "4#");
    assert_eq!(done["TerminationCondition"], "digit");
    assert_eq!(done["OperationId"], gather["OperationId"]);
}

#[test]
fn play_and_record_addressed_to_a_conference_use_a_temporary_connection() {
    let (server, _prompts, recordings) = server_with_dirs();
    let mut events = server.events();
    // Two API connections in a hairpinned conference; their "phones" are local sockets.
    let phones: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut members = Vec::new();
    let mut rx = Vec::new();
    for phone in &phones {
        let port = phone.local_addr().unwrap().port();
        let (_, c) = server.action(
            "CreateConnection",
            json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": port}),
        );
        members.push(c["ConnectionId"].as_str().unwrap().to_string());
        rx.push(SocketAddr::from((
            [127, 0, 0, 1],
            c["MediaRxPort"].as_u64().unwrap() as u16,
        )));
    }
    let (_, conf) = server.action(
        "CreateConference",
        json!({"ConnectionId": members[0], "Hairpin": true}),
    );
    let conf = conf["ConferenceId"].as_str().unwrap().to_string();
    server.action(
        "JoinConference",
        json!({"ConnectionId": members[1], "ConferenceId": conf}),
    );

    // Play to the conference: a temporary connection, the hairpin promoted, everyone hears it.
    let (code, play) = server.action(
        "Play",
        json!({"ConferenceId": conf, "Prompt1": "tone-600.wav"}),
    );
    assert_eq!(code, 200, "{play}");
    let leg = play["ConnectionId"].as_str().unwrap().to_string();
    assert!(!members.contains(&leg), "a connection of its own");
    events.wait_for(Duration::from_secs(2), |e| is(e, "ConferencePromoted"));
    let listed = server.connections();
    let entry = listed
        .iter()
        .find(|c| c["ConnectionId"] == leg.as_str())
        .expect("listed");
    assert_eq!(entry["State"], "conference-leg");
    assert_eq!(entry["ConferenceId"], conf.as_str());
    for phone in &phones {
        assert!(
            tone_power(&listen(phone, Duration::from_millis(500)), 600.0) > 1e6,
            "members hear the prompt"
        );
    }
    let done = events.wait_for(Duration::from_secs(3), |e| is(e, "Play_Complete"));
    assert_eq!(done["ConnectionId"], leg.as_str());
    assert_eq!(done["TerminationCondition"], "eod");
    let released = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "ConnectionReleased") && e["ConnectionId"] == leg.as_str()
    });
    assert_eq!(released["Reason"], "operation-complete");
    let r = server.get("/mediacontrol/resources");
    assert_eq!(r["Conference"]["Used"], 2, "the two members only");

    // Record the conference while member 0 talks.
    let (code, rec) = server.action(
        "Record",
        json!({"ConferenceId": conf, "Filename": "room.wav", "TermCondMaxTime": 800}),
    );
    assert_eq!(code, 200, "{rec}");
    let start = Instant::now();
    for i in 0..40u32 {
        let due = start + Duration::from_millis(20 * u64::from(i));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        phones[0]
            .send_to(&audio_packet(600.0, 8000.0, i), rx[0])
            .unwrap();
    }
    let done = events.wait_for(Duration::from_secs(3), |e| is(e, "Record_Complete"));
    assert_eq!(done["TerminationCondition"], "maxtime");
    assert_eq!(done["Filename"], "room.wav");
    let (_, samples) = read_pcm_wav(&recordings.path().join("room.wav"));
    assert!(samples.len() >= 8000 * 6 / 10, "{} samples", samples.len());
    assert!(
        tone_power(&samples[samples.len() / 3..], 600.0) > 1e6,
        "the mix is recorded"
    );

    // A long play to the conference stopped through its connection; releasing the
    // conference ends a running one with autostop.
    write_tone_wav(&_prompts.path().join("long.wav"), 8000, 600.0, 10_000);
    let (_, play) = server.action("Play", json!({"ConferenceId": conf, "Prompt1": "long.wav"}));
    let leg = play["ConnectionId"].as_str().unwrap().to_string();
    server.action("StopMediaOperation", json!({"ConnectionId": leg}));
    let stopped = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "Play_Complete") && e["ConnectionId"] == leg.as_str()
    });
    assert_eq!(stopped["TerminationCondition"], "userstop");
    let (_, play) = server.action(
        "PlayTone",
        json!({"ConferenceId": conf, "Duration": 0, "TermCondMaxTime": 60000}),
    );
    server.action("DeleteConnection", json!({"ConferenceId": conf}));
    let ended = events.wait_for(Duration::from_secs(2), |e| {
        is(e, "PlayTone_Complete") && e["OperationId"] == play["OperationId"]
    });
    assert_eq!(ended["TerminationCondition"], "autostop");
    server.wait_no_connections(Duration::from_secs(3));
    let r = server.get("/mediacontrol/resources");
    assert_eq!(r["Conference"]["Used"], 0);
}
