//! End to end behind a proxy: Kamailio (Debian package) record-routes the calls SIPp sends to
//! callbridge, so callbridge's responses must copy the Record-Route and its own in-dialog
//! requests (BYE, NOTIFY) must carry the route set and reach the caller through the proxy.
//! The proxy logs what passes through it; the tests check that log, the SIPp scenarios, the
//! events, and that nothing leaks. Kamailio missing is a failure naming scripts/setup-system.

mod common;

use std::time::Duration;

use common::kamailio::Kamailio;
use common::{repo_path, sipp_result, sipp_uas_on_a_free_port, Server};
use serde_json::{json, Value};

const CONF_ROUTE: &str =
    "[[route]]\nuser = \"^conf=(?P<conference>[^@;]+)$\"\nservice = \"conference\"\n";

#[test]
fn delete_connection_sends_bye_along_the_record_route_through_kamailio() {
    let server = Server::start("");
    let proxy = Kamailio::start(server.sip_port);
    let mut events = server.events();
    let caller = proxy.sipp_in_background(&[
        "-sf",
        &scenario("uac_remote_bye.xml"),
        "-s",
        "echo",
        "-m",
        "1",
    ]);
    let answered = events.wait_for_while(&caller, Duration::from_secs(5), named("CallAnswered"));
    let connection = answered["ConnectionId"].as_str().expect("ConnectionId");

    let (code, body) = server.action("DeleteConnection", json!({"ConnectionId": connection}));
    assert_eq!(code, 200, "{body}");
    let (ok, output) = sipp_result(caller.join().expect("sipp thread"));
    assert!(ok, "the caller got BYE with Q.850 cause 16: {output}");

    let callbridge = format!("127.0.0.1:{}", server.sip_port);
    let ok = proxy
        .replies()
        .into_iter()
        .find(|r| r.status == 200 && r.method == "INVITE" && r.source == callbridge)
        .unwrap_or_else(|| panic!("no 200 INVITE from callbridge; log:\n{}", proxy.log()));
    assert!(
        ok.record_route.starts_with(&proxy.route_uri_prefix()),
        "callbridge's 200 copies the Record-Route: {ok:?}"
    );
    let bye = seen_from(&proxy, "BYE", &callbridge);
    assert!(
        bye.route.starts_with(&proxy.route_uri_prefix()),
        "callbridge's BYE carries the route set: {bye:?}"
    );
    assert!(
        bye.request_uri.starts_with("sip:sipp@127.0.0.1:"),
        "the BYE's Request-URI is the caller's Contact: {bye:?}"
    );

    server.wait_no_connections(Duration::from_secs(3));
    let health = server.get("/health");
    assert_eq!(health["Calls"], 0, "{health}");
}

#[test]
fn a_pbx_refer_through_kamailio_gets_202_and_notifies_along_the_record_route() {
    let (bob, target) =
        sipp_uas_on_a_free_port(&["-sf", &scenario("uas_transfer_target.xml"), "-m", "1"]);
    let server = Server::start(&format!(
        "{CONF_ROUTE}[[trunk]]\nname = \"bob\"\naddress = \"127.0.0.1:{bob}\"\n"
    ));
    let proxy = Kamailio::start(server.sip_port);
    let mut events = server.events();

    let pbx = proxy.sipp_in_background(&[
        "-sf",
        &scenario("uac_refer.xml"),
        "-s",
        "conf=room1",
        "-key",
        "target",
        &format!("sip:bob@127.0.0.1:{bob}"),
        "-m",
        "1",
    ]);
    let joined = events.wait_for_while(&pbx, Duration::from_secs(5), named("ConferenceJoined"));
    let old_connection = joined["ConnectionId"].as_str().expect("ConnectionId");
    let changed = events.wait_for(Duration::from_secs(10), named("CallChanged"));
    let new_connection = changed["ConnectionId"].as_str().expect("ConnectionId");
    let to = changed["To"].as_str().expect("To");
    assert!(to.contains(&format!("bob@127.0.0.1:{bob}")), "{changed}");
    let (ok, output) = sipp_result(pbx.join().expect("sipp thread"));
    assert!(
        ok,
        "the PBX saw 202, NOTIFY 100 and NOTIFY 200 through Kamailio: {output}"
    );
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == old_connection
    });
    assert_eq!(released["Reason"], "transferred");

    let callbridge = format!("127.0.0.1:{}", server.sip_port);
    let replies = proxy.replies();
    assert!(
        replies
            .iter()
            .any(|r| r.status == 202 && r.method == "REFER" && r.source == callbridge),
        "callbridge's 202 went back through Kamailio: {replies:#?}"
    );
    let notifies: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "NOTIFY" && r.source == callbridge)
        .collect();
    assert!(
        notifies.len() >= 2,
        "both NOTIFYs reached Kamailio; log:\n{}",
        proxy.log()
    );
    for notify in &notifies {
        assert!(
            notify.route.starts_with(&proxy.route_uri_prefix()),
            "callbridge's NOTIFY carries the route set: {notify:?}"
        );
    }

    let (code, body) = server.action("DeleteConnection", json!({"ConnectionId": new_connection}));
    assert_eq!(code, 200, "{body}");
    let (ok, output) = sipp_result(target.join().expect("sipp thread"));
    assert!(
        ok,
        "Bob got Referred-By, answered and got our BYE: {output}"
    );
    server.wait_no_connections(Duration::from_secs(3));
    let health = server.get("/health");
    assert_eq!(health["Calls"], 0, "{health}");
}

fn scenario(name: &str) -> String {
    repo_path(&format!("tests/sipp/{name}"))
        .display()
        .to_string()
}

fn named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["Event"] == name
}

/// The one request of `method` Kamailio received from `source`, or a panic with its log.
fn seen_from(proxy: &Kamailio, method: &str, source: &str) -> common::kamailio::SeenRequest {
    proxy
        .requests()
        .into_iter()
        .find(|r| r.method == method && r.source == source)
        .unwrap_or_else(|| {
            panic!(
                "no {method} from {source} reached Kamailio; log:\n{}",
                proxy.log()
            )
        })
}
