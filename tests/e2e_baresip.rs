//! End to end with a real SIP softphone: baresip (Debian 12's 1.0.0, `apt-get install baresip`)
//! calls the echo service over loopback, sends a tone from a WAV file and records what comes
//! back; the recording must be that tone.
//!
//! baresip runs headless from its own temporary config directory (`-f`): no UI module reading
//! a terminal, the `aufile` module as audio source (a WAV file this test writes), ALSA's `null`
//! PCM as player (no sound card needed), and the `sndfile` audio filter, which dumps what the
//! decoder produced (the audio received from callbridge) to `<snd_path>/dump-<time>-dec.wav`;
//! baresip 1.0's `aufile` has no player side. `-e "/dial <uri>"` dials at start-up and
//! `-t <seconds>` makes it hang up (BYE) and exit on its own; a drop guard kills it regardless.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// How long baresip stays in the call before it hangs up (`-t`).
const CALL_SECONDS: u64 = 5;
/// Peak amplitude of the tone we send (about -12 dBFS).
const TONE_AMPLITUDE: f64 = 8000.0;

/// What one baresip call uses.
struct CallSetup {
    /// Codec modules to load, e.g. `["opus.so"]`.
    codec_modules: &'static [&'static str],
    /// The account's `audio_codecs` (the only codec offered).
    audio_codecs: &'static str,
    /// Sample rate of the WAV file and of baresip's source/player.
    sample_rate: u32,
    tone_hz: f64,
    /// SDES-SRTP mandatory (`mediaenc=srtp-mand`, module `srtp`).
    srtp: bool,
}

/// A running baresip; killed (and reaped) on drop if it has not exited by itself.
struct Baresip {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Where its SIP listens (127.0.0.1).
    sip_port: u16,
}

impl Baresip {
    /// Writes the config, account and tone into a fresh directory and starts baresip dialling
    /// the server's echo service; it hangs up after `CALL_SECONDS`.
    fn call(server: &Server, setup: &CallSetup) -> Baresip {
        Baresip::start(server, setup, "echo", CALL_SECONDS, "")
    }

    /// Starts baresip dialling `user` at the server (or `user@host...` as given); it quits
    /// after `seconds`. `extra` is appended to its config (e.g. the `cons` module and its UDP
    /// console address).
    fn start(server: &Server, setup: &CallSetup, user: &str, seconds: u64, extra: &str) -> Baresip {
        let dial = if user.contains('@') {
            format!("/dial sip:{user}")
        } else {
            format!("/dial sip:{user}@127.0.0.1:{}", server.sip_port)
        };
        Baresip::launch(setup, Some(dial), seconds, extra)
    }

    /// A phone: baresip answers the calls it gets at once (`answermode=auto`), dials none,
    /// and quits after `seconds`.
    fn phone(setup: &CallSetup, seconds: u64) -> Baresip {
        Baresip::launch(setup, None, seconds, "")
    }

    /// Starts baresip and waits until its SIP port is bound. The port is picked free just
    /// before baresip binds it, so another test (or an outgoing socket given that ephemeral
    /// port) can take it in between; baresip then exits at once and is started again on
    /// another port.
    fn launch(setup: &CallSetup, dial: Option<String>, seconds: u64, extra: &str) -> Baresip {
        const ATTEMPTS: usize = 4;
        let mut logs = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut baresip = Baresip::spawn(setup, dial.clone(), seconds, extra);
            if baresip.listening(Duration::from_secs(10)) {
                return baresip;
            }
            logs.push(format!("port {}:\n{}", baresip.sip_port, baresip.log()));
        }
        panic!(
            "baresip did not listen for SIP in {ATTEMPTS} attempts:\n{}",
            logs.join("\n")
        );
    }

    /// Whether baresip says it is ready (its SIP transports bound: UDP and TCP on its port,
    /// TLS on the next) within `within`; false at once when it exits.
    fn listening(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains("baresip is ready.") {
                return true;
            }
            if common::exited(&mut self.child) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn spawn(setup: &CallSetup, dial: Option<String>, seconds: u64, extra: &str) -> Baresip {
        let dir = tempfile::tempdir().expect("temp dir");
        let tone = dir.path().join("tone.wav");
        // Longer than the call: aufile stops feeding audio at the end of the file.
        write_tone_wav(
            &tone,
            setup.sample_rate,
            setup.tone_hz,
            seconds as f64 + 3.0,
        );
        let recordings = dir.path().join("rec");
        std::fs::create_dir(&recordings).expect("recordings dir");
        // UDP and TCP on the port, TLS (TCP) on the next one.
        let sip_port = loop {
            let port = common::free_udp_tcp_port();
            let tls = port.checked_add(1);
            if tls.is_some_and(|tls| std::net::TcpListener::bind(("127.0.0.1", tls)).is_ok()) {
                break port;
            }
        };
        let rtp_base = common::free_rtp_range(2);
        let mut modules: Vec<&str> = setup.codec_modules.to_vec();
        modules.extend(["aufile.so", "alsa.so", "sndfile.so"]);
        if setup.srtp {
            modules.push("srtp.so");
        }
        let modules: String = modules
            .iter()
            .map(|m| format!("module\t\t\t{m}\n"))
            .collect();
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             net_interface\t\t127.0.0.1\n\
             call_local_timeout\t20\n\
             call_max_calls\t\t1\n\
             audio_source\t\taufile,{tone}\n\
             audio_player\t\talsa,null\n\
             audio_alert\t\talsa,null\n\
             ausrc_srate\t\t{rate}\n\
             auplay_srate\t\t{rate}\n\
             ausrc_channels\t\t1\n\
             auplay_channels\t\t1\n\
             audio_buffer\t\t20-160\n\
             audio_level\t\tno\n\
             rtp_tos\t\t\t0\n\
             rtp_ports\t\t{rtp_base}-{rtp_end}\n\
             rtcp_mux\t\tno\n\
             jitter_buffer_delay\t1-10\n\
             rtp_stats\t\tno\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             {modules}\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             snd_path\t\t{recordings}\n\
             ringback_disabled\tyes\n\
             {extra}",
            tone = tone.display(),
            rate = setup.sample_rate,
            rtp_end = rtp_base + 3,
            recordings = recordings.display(),
        );
        std::fs::write(dir.path().join("config"), config).expect("write config");
        let mediaenc = if setup.srtp {
            ";mediaenc=srtp-mand"
        } else {
            ""
        };
        // A phone is the agent's number 6001 and answers at once.
        let (user, answermode) = if dial.is_some() {
            ("caller", "manual")
        } else {
            ("6001", "auto")
        };
        let account = format!(
            "<sip:{user}@127.0.0.1>;regint=0;answermode={answermode};audio_codecs={}{mediaenc}\n",
            setup.audio_codecs
        );
        std::fs::write(dir.path().join("accounts"), account).expect("write accounts");
        std::fs::write(dir.path().join("contacts"), "").expect("write contacts");
        let log = std::fs::File::create(dir.path().join("baresip.log")).expect("log file");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-4", "-v", "-s"])
            .args(["-t", &seconds.to_string()])
            .args(dial.iter().flat_map(|d| ["-e", d.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("baresip is installed (Debian package baresip; scripts/setup-system)");
        Baresip {
            child: Some(child),
            dir,
            sip_port,
        }
    }

    /// Waits for baresip to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// The decoder dump `sndfile` wrote: what baresip received from callbridge.
    fn received_audio(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.path().join("rec"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A 16-bit mono PCM WAV file holding `seconds` of a sine at `hz`.
fn write_tone_wav(path: &Path, rate: u32, hz: f64, seconds: f64) {
    let samples = (f64::from(rate) * seconds) as u32;
    let data_len = samples * 2;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let t = f64::from(n) / f64::from(rate);
        let sample = (TONE_AMPLITUDE * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write tone");
}

/// Reads a 16-bit PCM WAV file: (sample rate, the first channel's samples).
fn read_wav(path: &Path) -> (u32, Vec<f64>) {
    let bytes = std::fs::read(path).expect("read recording");
    assert!(
        bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{} is not a WAV file",
        path.display()
    );
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut format = None;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4) as usize;
        let body = at + 8;
        if id == b"fmt " {
            // (format tag, channels, sample rate, bits per sample)
            format = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.expect("fmt chunk before data");
            assert_eq!((tag, bits), (1, 16), "16-bit PCM recording");
            // A file not closed cleanly may still say 0 bytes: take what is there.
            let end = if len == 0 {
                bytes.len()
            } else {
                (body + len).min(bytes.len())
            };
            let samples = bytes[body..end]
                .chunks_exact(2 * usize::from(channels))
                .map(|frame| f64::from(i16::from_le_bytes([frame[0], frame[1]])))
                .collect();
            return (rate, samples);
        }
        at = body + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Goertzel power of `samples` at `hz`.
fn goertzel(samples: &[f64], rate: u32, hz: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// Checks the received recording is the tone we sent: over the middle of the call (its first
/// and last second left out), every 100 ms window has the tone more than 20 dB above each other
/// probe frequency, at about the level we sent. Returns the worst margin in dB.
fn assert_tone_came_back(path: &Path, tone_hz: f64, context: &str) -> f64 {
    let (rate, samples) = read_wav(path);
    let seconds = samples.len() as f64 / f64::from(rate);
    assert!(
        seconds >= CALL_SECONDS as f64 - 1.5,
        "only {seconds:.2} s received\n{context}"
    );
    let window = rate as usize / 10;
    let middle = &samples[rate as usize..samples.len() - rate as usize];
    let probes: Vec<f64> = [
        300.0, 500.0, 700.0, 1000.0, 1300.0, 1700.0, 2100.0, 2500.0, 3100.0,
    ]
    .into_iter()
    .filter(|f: &f64| (f - tone_hz).abs() > 150.0)
    .collect();
    let sent_rms = TONE_AMPLITUDE / std::f64::consts::SQRT_2;
    let mut worst = f64::INFINITY;
    for (n, chunk) in middle.chunks_exact(window).enumerate() {
        let rms = (chunk.iter().map(|x| x * x).sum::<f64>() / chunk.len() as f64).sqrt();
        let level_db = 20.0 * (rms / sent_rms).log10();
        let at = 1.0 + n as f64 * 0.1;
        assert!(
            level_db.abs() < 6.0,
            "window at {at:.1} s: level {level_db:.1} dB relative to what was sent\n{context}"
        );
        let tone = goertzel(chunk, rate, tone_hz);
        let other = probes
            .iter()
            .map(|&f| goertzel(chunk, rate, f))
            .fold(0.0, f64::max);
        let margin = 10.0 * (tone / other.max(1e-9)).log10();
        assert!(
            margin > 20.0,
            "window at {at:.1} s: {tone_hz} Hz only {margin:.1} dB above the other probes\n{context}"
        );
        worst = worst.min(margin);
    }
    assert!(
        middle.len() >= 2 * rate as usize,
        "at least 2 s analysed\n{context}"
    );
    worst
}

/// The one connection listed, while the call is up.
fn the_connection(server: &Server) -> Value {
    let list = server.connections();
    assert_eq!(list.len(), 1, "{list:#?}");
    list[0].clone()
}

/// Runs one baresip call against `server` and checks the SIP side (answered, released by
/// baresip's BYE, nothing left). `during` runs while the call is up, with the connection id.
/// Returns baresip (exited) for its recording and log.
fn call_and_hang_up(server: &Server, setup: &CallSetup, during: impl FnOnce(&str)) -> Baresip {
    let mut events = server.events();
    let started = Instant::now();
    let mut baresip = Baresip::call(server, setup);
    // baresip loads its modules (Opus, TLS) before it dials: seconds on a CI machine busy with
    // the other test binaries (5 s was once too short there).
    let answered = events.wait_for(Duration::from_secs(15), |e| e["Event"] == "CallAnswered");
    let connection = answered["ConnectionId"]
        .as_str()
        .expect("ConnectionId")
        .to_string();
    let call = answered["CallId"].as_str().expect("CallId").to_string();
    during(&connection);
    let status = baresip.wait_exit(Duration::from_secs(CALL_SECONDS + 5));
    let log = baresip.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "baresip did not hang up and exit cleanly ({status:?}); its log:\n{log}"
    );
    let released = events.wait_for(Duration::from_secs(3), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == connection.as_str()
    });
    assert_eq!(released["Reason"], "remote-hangup", "{released}\n{log}");
    assert_eq!(released["CallId"], call.as_str());
    let ended = events.wait_for(Duration::from_secs(3), |e| {
        e["Event"] == "CallEnded" && e["CallId"] == call.as_str()
    });
    assert_eq!(ended["Reason"], "remote-hangup", "{ended}");
    server.wait_no_connections(Duration::from_secs(2));
    eprintln!(
        "baresip call done in {:.2} s; server released it with {released}",
        started.elapsed().as_secs_f64()
    );
    baresip
}

#[test]
fn baresip_opus_call_gets_its_tone_echoed() {
    // The built-in `media.codecs` default is PCMU/PCMA; this is the shipped config's list.
    let server =
        Server::start_with_overrides(&["media.codecs=[\"PCMU\",\"PCMA\",\"G722\",\"OPUS\"]"]);
    let setup = CallSetup {
        codec_modules: &["opus.so"],
        audio_codecs: "opus/48000/2",
        sample_rate: 48000,
        tone_hz: 1000.0,
        srtp: false,
    };
    let baresip = call_and_hang_up(&server, &setup, |_| {
        std::thread::sleep(Duration::from_millis(2000));
        let listed = the_connection(&server);
        assert_eq!(listed["MediaRxCodec"], "Opus", "{listed:#}");
        assert_eq!(listed["MediaTxCodec"], "Opus", "{listed:#}");
        assert!(listed["Srtp"].is_null(), "{listed:#}");
        assert!(
            listed["Stats"]["RtpPacketsReceived"].as_u64() > Some(50),
            "{listed:#}"
        );
    });
    let log = baresip.log();
    let recording = baresip
        .received_audio()
        .unwrap_or_else(|| panic!("sndfile wrote no decoder dump; baresip log:\n{log}"));
    let margin = assert_tone_came_back(&recording, setup.tone_hz, &log);
    eprintln!("opus echo: 1 kHz at least {margin:.1} dB above the other probes");
}

#[test]
fn baresip_srtp_pcmu_call_gets_its_tone_echoed() {
    let server = Server::start_with_overrides(&["media.srtp=\"require\""]);
    let setup = CallSetup {
        codec_modules: &["g711.so"],
        audio_codecs: "pcmu",
        sample_rate: 8000,
        tone_hz: 440.0,
        srtp: true,
    };
    let baresip = call_and_hang_up(&server, &setup, |_| {
        std::thread::sleep(Duration::from_millis(1500));
        let early = the_connection(&server);
        std::thread::sleep(Duration::from_millis(2000));
        let later = the_connection(&server);
        for listed in [&early, &later] {
            assert_eq!(listed["Srtp"], "AES_CM_128_HMAC_SHA1_80", "{listed:#}");
            assert_eq!(listed["MediaRxCodec"], "G711u", "{listed:#}");
        }
        let stats = |v: &Value, key: &str| v["Stats"][key].as_u64().expect(key);
        // Nothing baresip sent while the media flowed was refused by SRTP/SRTCP, and the
        // audio arrived at ~50 packets/s.
        assert_eq!(
            stats(&early, "SrtpRejected"),
            stats(&later, "SrtpRejected"),
            "SRTP rejections while the call was up:\n{early:#}\n{later:#}"
        );
        let received = stats(&later, "RtpPacketsReceived") - stats(&early, "RtpPacketsReceived");
        assert!((90..=110).contains(&received), "{received} packets in 2 s");
        // baresip 1.0 sends one RTCP APP "PING"/"PONG" NAT-pinhole packet in the clear when
        // its RTCP starts, just before its SRTP context is set up (stream_start_rtcp before
        // the mediaenc start). That packet fails SRTCP authentication and is counted; it is
        // the only one allowed.
        assert!(
            stats(&later, "SrtpRejected") <= 1,
            "more than baresip's clear-text RTCP APP PING was rejected:\n{later:#}"
        );
        eprintln!("SRTP call, mid-call listing: {later}");
    });
    let log = baresip.log();
    assert!(
        log.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "baresip did not run SRTP:\n{log}"
    );
    let recording = baresip
        .received_audio()
        .unwrap_or_else(|| panic!("sndfile wrote no decoder dump; baresip log:\n{log}"));
    let margin = assert_tone_came_back(&recording, setup.tone_hz, &log);
    eprintln!("SRTP PCMU echo: 440 Hz at least {margin:.1} dB above the other probes");
}

/// Types a command at baresip's UDP console (`cons` module), as a user at its keyboard.
fn console(port: u16, command: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .send_to(format!("{command}\n").as_bytes(), ("127.0.0.1", port))
        .expect("send to baresip's console");
}

#[test]
fn baresip_as_a_pbx_phone_holds_resumes_and_transfers_its_call() {
    let (bob, target) = common::sipp_uas_on_a_free_port(&[
        "-sf",
        &common::repo_path("tests/sipp/uas_answer.xml")
            .display()
            .to_string(),
        "-m",
        "1",
    ]);
    let server = Server::start(&format!(
        "[[route]]\nuser = \"^app$\"\nservice = \"application\"\n\
         [[trunk]]\nname = \"bob\"\naddress = \"127.0.0.1:{bob}\"\n"
    ));
    let mut events = server.events();
    let cons = common::free_udp_tcp_port();
    let setup = CallSetup {
        codec_modules: &["g711.so"],
        audio_codecs: "pcmu",
        sample_rate: 8000,
        tone_hz: 440.0,
        srtp: false,
    };
    let baresip = Baresip::start(
        &server,
        &setup,
        "app",
        30,
        &format!("module\t\t\tcons.so\ncons_listen\t\t127.0.0.1:{cons}\n"),
    );
    let incoming = events.wait_for(Duration::from_secs(5), |e| e["Event"] == "IncomingCall");
    let call = incoming["CallId"].as_str().unwrap().to_string();
    let r = common::client()
        .post(server.url("/callcontrol/AnswerCall"))
        .bearer_auth(common::TOKEN)
        .json(&serde_json::json!({"CallId": call, "Conference": true}))
        .send()
        .expect("API");
    let answered: Value = r.json().unwrap();
    let connection = answered["ConnectionId"]
        .as_str()
        .expect("answered")
        .to_string();
    let conference = answered["ConferenceId"]
        .as_str()
        .expect("in a conference")
        .to_string();
    let is_call = |name: &'static str, call: String| {
        move |e: &Value| e["Event"] == name && e["CallId"] == call.as_str()
    };
    events.wait_for(Duration::from_secs(5), is_call("StartTx", call.clone()));

    // Hold (re-INVITE sendonly): StopTx; resume: StartTx again.
    std::thread::sleep(Duration::from_millis(500));
    console(cons, "/hold");
    events.wait_for(Duration::from_secs(5), is_call("StopTx", call.clone()));
    let before = events.drain().len();
    console(cons, "/resume");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let resumed = events.drain()[before..]
            .iter()
            .any(|e| e["Event"] == "StartTx" && e["CallId"] == call.as_str());
        if resumed {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        events.drain()[before..]
            .iter()
            .any(|e| e["Event"] == "StartTx" && e["CallId"] == call.as_str()),
        "no StartTx after resume; baresip log:\n{}",
        baresip.log()
    );

    // Transfer (REFER) to Bob: Bob's call takes the phone's place in the conference.
    console(cons, &format!("/transfer sip:bob@127.0.0.1:{bob}"));
    let changed = events.wait_for(Duration::from_secs(10), |e| e["Event"] == "CallChanged");
    assert_eq!(changed["ReplacesCallId"], call.as_str());
    let bobs = changed["ConnectionId"].as_str().unwrap().to_string();
    let released = events.wait_for(Duration::from_secs(10), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == connection.as_str()
    });
    assert_eq!(released["Reason"], "transferred", "{}", baresip.log());
    let conferences = server.get("/mediacontrol/conferences");
    let room = &conferences["Conferences"][0];
    assert_eq!(room["ConferenceId"], conference.as_str());
    assert_eq!(
        room["Participants"][0]["ConnectionId"],
        bobs.as_str(),
        "{conferences}"
    );

    let r = common::client()
        .post(server.url("/callcontrol/Hangup"))
        .bearer_auth(common::TOKEN)
        .json(&serde_json::json!({"CallId": changed["CallId"]}))
        .send()
        .expect("API");
    assert_eq!(r.status(), 200);
    let (ok, output) = common::sipp_result(target.join().unwrap());
    assert!(ok, "Bob answered and got our BYE: {output}");
    server.wait_no_connections(Duration::from_secs(3));
    // The phone has nothing left to do; the guard ends it.
    drop(baresip);
}

#[test]
fn baresip_over_tls_with_srtp_gets_its_tone_echoed() {
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let (certificate, key) = common::self_signed_certificate(tls_dir.path());
    let tls_port = common::free_tcp_port();
    let server = Server::start_with_tls("", tls_port, &certificate, &key);
    let setup = CallSetup {
        codec_modules: &["g711.so"],
        audio_codecs: "pcmu",
        sample_rate: 8000,
        tone_hz: 440.0,
        srtp: true,
    };
    let mut events = server.events();
    let mut baresip = Baresip::start(
        &server,
        &setup,
        &format!("echo@127.0.0.1:{tls_port};transport=tls"),
        CALL_SECONDS,
        &format!("sip_cafile\t\t{}\n", certificate.display()),
    );
    // baresip loads its modules (Opus, TLS) before it dials: seconds on a CI machine busy with
    // the other test binaries (5 s was once too short there).
    let answered = events.wait_for(Duration::from_secs(15), |e| e["Event"] == "CallAnswered");
    let connection = answered["ConnectionId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let listed = the_connection(&server);
    assert_eq!(listed["Srtp"], "AES_CM_128_HMAC_SHA1_80", "{listed:#}");
    let status = baresip.wait_exit(Duration::from_secs(CALL_SECONDS + 5));
    let log = baresip.log();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(
        log.contains("SIP/2.0/TLS"),
        "the call went over TLS:\n{log}"
    );
    let released = events.wait_for(Duration::from_secs(3), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == connection.as_str()
    });
    assert_eq!(released["Reason"], "remote-hangup", "{released}");
    let recording = baresip
        .received_audio()
        .unwrap_or_else(|| panic!("sndfile wrote no decoder dump; baresip log:\n{log}"));
    assert_tone_came_back(&recording, setup.tone_hz, &log);
}

/// One agent gateway request (plain HTTP): the JSON answer and the rotated Guid, if any.
fn gateway_call(
    method: reqwest::Method,
    url: &str,
    guid: Option<&str>,
    body: Option<Value>,
) -> (Value, Option<String>) {
    let mut request = common::client()
        .request(method, url)
        .header("Content-Type", "application/json; charset=UTF-8");
    if let Some(guid) = guid {
        request = request.header("Guid", guid);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let r = request.send().expect("gateway reachable");
    let guid = r
        .headers()
        .get("set-guid")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("JSESSIONID=").to_string());
    (r.json().expect("JSON"), guid)
}

#[test]
fn baresip_as_an_agents_phone_answers_the_conference_and_gets_bye_at_release() {
    let setup = CallSetup {
        codec_modules: &["g711.so"],
        audio_codecs: "PCMU",
        sample_rate: 8000,
        tone_hz: 1000.0,
        srtp: false,
    };
    let mut phone = Baresip::phone(&setup, 20);
    let phone_log = phone.dir.path().join("baresip.log");
    let gateway_port = common::free_tcp_port();
    let server = Server::start(&format!(
        "[agent_gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\ninsecure_http = true\npoll_wait_ms = 1000\n\
         [[trunk]]\nname = \"pbx\"\naddress = \"127.0.0.1:{}\"\n",
        phone.sip_port
    ));
    let (ok, out) = server.ctl(&["agents", "add", "1001", "--password", "pw"]);
    assert!(ok, "{out}");
    let base = format!("http://127.0.0.1:{gateway_port}/agentgateway/resource");
    let (signed_in, guid) = gateway_call(
        reqwest::Method::PUT,
        &format!("{base}/onlineagent/1001"),
        None,
        Some(serde_json::json!({"password": "pw", "phonenum": "6001"})),
    );
    assert_eq!(signed_in["retcode"], "0", "{signed_in}");
    let mut guid = guid.expect("Guid");
    let conf = |guid: &str, op: &str, body: Value| {
        gateway_call(
            reqwest::Method::POST,
            &format!("{base}/agentconf/1001/{op}"),
            Some(guid),
            Some(body),
        )
        .0
    };
    let requested = conf(
        &guid,
        "requestagentconf",
        serde_json::json!({"memberNum": 2}),
    );
    assert_eq!(requested["retcode"], "0", "{requested}");
    // Poll until `kind`, following Guid rotations.
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |guid: &mut String, kind: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.iter().any(|k| k == kind) {
            assert!(
                Instant::now() < deadline,
                "no {kind}: {seen:?}\nbaresip:\n{}",
                std::fs::read_to_string(phone_log.as_path()).unwrap_or_default()
            );
            let (answer, rotated) = gateway_call(
                reqwest::Method::GET,
                &format!("{base}/agentevent/1001"),
                Some(guid),
                None,
            );
            if let Some(g) = rotated {
                *guid = g;
            }
            if let Some(kind) = answer["event"]["eventType"].as_str() {
                seen.push(kind.to_string());
            }
        }
    };
    wait_for(&mut guid, "AgentConf_RequestSuccess");
    // baresip is in the conference: its call is one of callbridge's connections.
    assert_eq!(
        server.connections().len(),
        1,
        "baresip's call; its log:\n{}",
        phone.log()
    );
    let released = conf(&guid, "releaseagentconf", serde_json::json!({}));
    assert_eq!(released["retcode"], "0", "{released}");
    wait_for(&mut guid, "AgentState_Ready");
    server.wait_no_connections(Duration::from_secs(5));
    let log = phone.log();
    assert!(
        log.contains("BYE") || log.contains("terminated") || log.contains("closed"),
        "baresip saw the call end:\n{log}"
    );
    let _ = phone.wait_exit(Duration::from_millis(10));
}
