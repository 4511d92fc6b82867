//! The command line: version, check-config (good file, unknown key with its line, bad value),
//! `--set` overrides, and the shipped default config.

mod common;

use std::process::Command;

fn callbridge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(args)
        .output()
        .expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn shipped_config() -> String {
    format!("{}/configs/callbridge.toml", env!("CARGO_MANIFEST_DIR"))
}

/// The shipped config reads its token from the file the .deb generates at install; tests
/// point it at a temporary one.
fn token_override(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("api.token");
    std::fs::write(&path, "0123456789abcdef\n").unwrap();
    format!("api.token_file={:?}", path.display().to_string())
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out) = callbridge(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("callbridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_shipped_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let set = token_override(&dir);
    let (code, out) = callbridge(&["check-config", "--config", &shipped_config(), "--set", &set]);
    assert_eq!(code, 0, "{out}");
    // Without the generated token file it says which file is missing.
    let (code, out) = callbridge(&[
        "check-config",
        "--config",
        &shipped_config(),
        "--set",
        "api.token_file=\"/nonexistent/api.token\"",
    ]);
    assert_ne!(code, 0);
    assert!(out.contains("/nonexistent/api.token"), "{out}");
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\n\n[media]\nrtp_port_mni = 20000\n",
    )
    .unwrap();
    let (code, out) = callbridge(&["check-config", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("rtp_port_mni"), "{out}");
    assert!(out.contains("line 5"), "{out}");
}

/// `check-config` on `config` with the test token and `sets` overrides.
fn check_with(config: &str, token: &str, sets: &[&str]) -> (i32, String) {
    let mut args = vec!["check-config", "--config", config, "--set", token];
    for set in sets {
        args.extend(["--set", set]);
    }
    callbridge(&args)
}

#[test]
fn check_config_rejects_bad_values_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_override(&dir);
    let config = shipped_config();
    let (code, out) = check_with(&config, &token, &["media.rtp_port_min=40000"]);
    assert_ne!(code, 0);
    assert!(out.contains("rtp_port_min"), "{out}");
    let (code, out) = check_with(&config, &token, &["api.nope=1"]);
    assert_ne!(code, 0);
    assert!(out.contains("nope"), "{out}");
    let (code, out) = check_with(&config, &token, &["api.listen=127.0.0.1:9999"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = callbridge(&["check-config", "--config", "/nonexistent/callbridge.toml"]);
    assert_ne!(code, 0);
    assert!(out.contains("/nonexistent/callbridge.toml"), "{out}");
}

#[test]
fn every_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_override(&dir);
    let examples = format!("{}/configs/examples", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in [examples.clone(), format!("{examples}/cluster")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (code, out) = check_with(path.to_str().unwrap(), &token, &[]);
                assert_eq!(code, 0, "{}: {out}", path.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 7,
        "the PBX trunk, conference bridge, IVR and high-density examples, three cluster nodes"
    );
}

#[test]
fn run_on_a_taken_sip_port_exits_naming_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let api_port = common::free_tcp_port();
    let config = dir.path().join("callbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"tcp://127.0.0.1:{port}\"]\n\
             [store]\npath = {:?}\n[recording]\ndir = {:?}\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\ntokens = [\"0123456789abcdef\"]\n",
            dir.path().join("callbridge.db").display().to_string(),
            dir.path().join("calls").display().to_string(),
        ),
    )
    .unwrap();
    let (code, out) = callbridge(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "callbridge: cannot bind SIP listeners: tcp://127.0.0.1:{port}: Address already in use"
        )),
        "{out}"
    );
}
