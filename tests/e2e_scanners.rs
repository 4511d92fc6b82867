//! End to end: what SIP scanners learn (issue 20, "quiet to scanners"). SIPVicious (Debian's
//! `sipvicious`: `svmap` fingerprints SIP servers, `svwar` enumerates extensions) against the
//! real binary on loopback. An open server shows `callbridge` without its version; behind
//! trunk protection with `untrusted = "ignore"` both tools find nothing at all.

mod common;

use std::process::Command;

use common::Server;

/// Runs a SIPVicious tool with its state in `home` (it keeps sessions under ~/.sipvicious);
/// returns what it printed. None when the tool is not installed.
fn sipvicious(tool: &str, home: &std::path::Path, args: &[&str]) -> Option<String> {
    let output = match Command::new(tool).env("HOME", home).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{tool}: {e}"),
    };
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn require(found: Option<String>, tool: &str) -> String {
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed: scripts/setup-system installs Debian's sipvicious")
    })
}

/// What svwar tries: a few extensions, 7000 among them, which a route serves.
const EXTENSIONS: &str = "100-103,7000";
const ROUTE_7000: &str = "[[route]]\nuser = \"^7000$\"\nservice = \"echo\"\n";

fn svwar(home: &std::path::Path, port: &str) -> String {
    require(
        sipvicious(
            "svwar",
            home,
            &[
                "-b",
                "127.0.0.1",
                "-p",
                port,
                "-e",
                EXTENSIONS,
                "-m",
                "INVITE",
                "127.0.0.1",
            ],
        ),
        "svwar",
    )
}

fn svmap(home: &std::path::Path, port: &str) -> String {
    require(
        sipvicious("svmap", home, &["-b", "127.0.0.1", "-p", port, "127.0.0.1"]),
        "svmap",
    )
}

#[test]
fn svmap_sees_no_version_and_behind_trunk_protection_svmap_and_svwar_see_nothing() {
    let home = tempfile::tempdir().expect("scanner home");
    // Open (no trunks): both tools find the server, which proves they work here.
    let open = Server::start(ROUTE_7000);
    let port = open.sip_port.to_string();
    let map = svmap(home.path(), &port);
    assert!(
        map.contains("| callbridge"),
        "an open server answers: {map}"
    );
    assert!(
        !map.contains(env!("CARGO_PKG_VERSION")),
        "the version is nobody's business: {map}"
    );
    let war = svwar(home.path(), &port);
    assert!(
        war.contains("| 7000"),
        "svwar finds the route's extension: {war}"
    );
    drop(open);

    // Trunk protection, untrusted sources ignored: nothing answers, nothing is found.
    let protected = Server::start(&format!(
        "{ROUTE_7000}[[trunk]]\nname = \"pbx\"\nallow = [\"127.0.0.2\"]\n"
    ));
    let config = std::fs::read_to_string(protected.config_path()).unwrap();
    std::fs::write(
        protected.config_path(),
        config.replace("[sip]\n", "[sip]\nuntrusted = \"ignore\"\n"),
    )
    .unwrap();
    let reloaded = common::client()
        .post(protected.url("/admin/reload"))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let port = protected.sip_port.to_string();
    let map = svmap(home.path(), &port);
    assert!(map.contains("found nothing"), "svmap: {map}");
    assert!(!map.contains("callbridge"), "svmap found the server: {map}");
    let war = svwar(home.path(), &port);
    assert!(!war.contains("7000"), "svwar found an extension: {war}");
    assert!(!war.contains("Traceback"), "svwar failed to run: {war}");
    assert!(
        protected.metric("callbridge_sip_untrusted_requests_total") > 0.0,
        "the scans reached the server and were ignored"
    );
    assert!(protected.connections().is_empty());
}
