//! `callbridge ctl`: operator commands against the local API, with the configured token.
//!
//! Owns: a minimal HTTP/1.1 client over a std `TcpStream` (the API is local and plain HTTP, so
//! no client library is needed) and the rendering of listings as text tables.
//! Must not: touch server state except through the public API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::app::config::Config;

/// One operator command.
#[derive(Debug, Clone)]
pub enum CtlCommand {
    Calls,
    /// Every node's calls in progress, from the store (no API needed).
    ClusterCalls,
    Connections,
    Conferences,
    /// Everything about one connection (JSON).
    Show(String),
    /// End a call: DeleteConnection on its connection (BYE with Q.850 cause 16).
    Hangup(String),
    /// Release a conference and every connection in it.
    ReleaseConference(String),
    /// Reload the configuration (as SIGHUP does).
    Reload,
    /// Manage the recording API's users, in the store's database directly.
    Users(UserCommand),
    /// Manage the agent gateway's agents, in the store's database directly.
    Agents(AgentCommand),
}

/// `callbridge ctl agents ...`: a password given as None is read from standard input.
#[derive(Debug, Clone)]
pub enum AgentCommand {
    Add {
        id: i64,
        password: Option<String>,
        inspector: bool,
    },
    Remove {
        id: i64,
    },
    List,
    Passwd {
        id: i64,
        password: Option<String>,
    },
}

/// `callbridge ctl users ...`: a password given as None is read from standard input.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Add {
        name: String,
        password: Option<String>,
    },
    Remove {
        name: String,
    },
    List,
    Passwd {
        name: String,
        password: Option<String>,
    },
}

/// Runs a command and returns what to print; errors are fit for stderr.
pub fn run(config: &Config, command: CtlCommand) -> Result<String, String> {
    match command {
        CtlCommand::Users(users) => return manage_users(config, users),
        CtlCommand::Agents(agents) => return manage_agents(config, agents),
        CtlCommand::ClusterCalls => return cluster_calls(config),
        _ => {}
    }
    let token = config
        .api_tokens()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no API token in the configuration (api.tokens or api.token_file)")?;
    let api = Api {
        addr: loopback_if_wildcard(config.api.listen),
        token,
    };
    match command {
        CtlCommand::Users(_) | CtlCommand::Agents(_) | CtlCommand::ClusterCalls => {
            unreachable!("answered above without the API")
        }
        CtlCommand::Calls => {
            let v = api.get("/callcontrol/calls")?;
            Ok(table(
                &with_party_summary(&v["Calls"]),
                &[
                    "CallId",
                    "ConnID",
                    "State",
                    "Service",
                    "ConnectionId",
                    "DN",
                    "CallState",
                    "Parties",
                    "From",
                    "To",
                ],
            ))
        }
        CtlCommand::Connections => {
            let v = api.get("/mediacontrol/connections")?;
            Ok(table(
                &v["Connections"],
                &[
                    "ConnectionId",
                    "State",
                    "CallId",
                    "MediaRxIP",
                    "MediaRxPort",
                    "MediaTxIP",
                    "MediaTxPort",
                    "MediaRxCodec",
                ],
            ))
        }
        CtlCommand::Conferences => {
            let v = api.get("/mediacontrol/conferences")?;
            let rows: Vec<Value> = v["Conferences"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut c| {
                    let members = c["Participants"].as_array().map_or(0, Vec::len);
                    c["Participants"] = json!(members);
                    c
                })
                .collect();
            Ok(table(
                &Value::Array(rows),
                &[
                    "ConferenceId",
                    "Name",
                    "Participants",
                    "Hairpin",
                    "SampleRate",
                ],
            ))
        }
        CtlCommand::Show(id) => {
            let v = api.get("/mediacontrol/connections")?;
            let found = v["Connections"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["ConnectionId"] == id.as_str()))
                .ok_or(format!("connection {id} does not exist"))?;
            serde_json::to_string_pretty(found).map_err(|e| e.to_string())
        }
        CtlCommand::Hangup(call) => {
            let v = api.get("/callcontrol/calls")?;
            let connection = v["Calls"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["CallId"] == call.as_str()))
                .ok_or(format!("call {call} does not exist"))?["ConnectionId"]
                .as_str()
                .ok_or(format!("call {call} has no connection yet"))?
                .to_string();
            api.action("DeleteConnection", json!({ "ConnectionId": connection }))?;
            Ok(format!(
                "call {call} hung up (connection {connection} released)"
            ))
        }
        CtlCommand::ReleaseConference(id) => {
            api.action("DeleteConnection", json!({ "ConferenceId": id }))?;
            Ok(format!("conference {id} released"))
        }
        CtlCommand::Reload => {
            api.post("/admin/reload", &json!({}))?;
            Ok("configuration reloaded".into())
        }
    }
}

struct Api {
    addr: SocketAddr,
    token: String,
}

impl Api {
    fn get(&self, path: &str) -> Result<Value, String> {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.request("POST", path, Some(body))
    }

    /// A Media Control action; a non-"0" ResultCode is an error with the server's message.
    fn action(&self, action: &str, body: Value) -> Result<Value, String> {
        self.post(&format!("/mediacontrol/{action}"), &body)
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let unreachable = |e: std::io::Error| format!("cannot reach the API at {}: {e}", self.addr);
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(3)).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(unreachable)?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(unreachable)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(unreachable)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("malformed HTTP response from the API")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("malformed HTTP status line from the API")?;
        let value: Value = serde_json::from_str(body.trim())
            .map_err(|e| format!("API answered HTTP {status} without JSON: {e}"))?;
        if status != 200 {
            let code = value["ResultCode"].as_str().unwrap_or("?");
            let message = value["Error"].as_str().unwrap_or("");
            return Err(format!("HTTP {status}, ResultCode {code}: {message}"));
        }
        Ok(value)
    }
}

fn loopback_if_wildcard(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let ip = if addr.is_ipv4() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        std::net::IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1])
    };
    SocketAddr::new(ip, addr.port())
}

/// A plain text table of `columns` from a JSON array of objects.
/// The calls with their parties as one cell: `DN/ConnectionId` each, comma-separated.
fn with_party_summary(calls: &Value) -> Value {
    let rows: Vec<Value> = calls
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut call| {
            let parties: Vec<String> = call["Parties"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let dn = p["DN"].as_str().filter(|d| !d.is_empty()).unwrap_or("-");
                            let id = p["ConnectionId"].as_str().unwrap_or("-");
                            format!("{dn}/{id}")
                        })
                        .collect()
                })
                .unwrap_or_default();
            call["Parties"] = if parties.is_empty() {
                Value::Null
            } else {
                Value::String(parties.join(","))
            };
            call
        })
        .collect();
    Value::Array(rows)
}

fn table(rows: &Value, columns: &[&str]) -> String {
    let rows = rows.as_array().cloned().unwrap_or_default();
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(columns.to_vec())];
    out.extend(
        cells
            .iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.push(format!("({} total)", rows.len()));
    out.join("\n")
}

/// `ctl calls --cluster`: the calls the store says are going on, every node's.
fn cluster_calls(config: &Config) -> Result<String, String> {
    let db = open_store(config)?;
    let calls = db.ongoing_calls().map_err(|e| e.to_string())?;
    let at = |ms: i64| {
        let when = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_seconds(when).to_string()
    };
    let rows: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "Node": c.node_id,
                "CallId": c.call_id,
                "Direction": c.direction.word(),
                "Calling": c.calling,
                "Called": c.called,
                "Started": at(c.started_ms),
                "Answered": c.answered_ms.map(at),
            })
        })
        .collect();
    Ok(table(
        &Value::Array(rows),
        &[
            "Node",
            "CallId",
            "Direction",
            "Calling",
            "Called",
            "Started",
            "Answered",
        ],
    ))
}

/// `ctl users`: opens the store's database (WAL: the running server may have it open too).
fn manage_users(config: &Config, command: UserCommand) -> Result<String, String> {
    let mut db = open_store(config)?;
    match command {
        UserCommand::Add { name, password } => {
            let password = password_or_stdin(password)?;
            let now = i64::try_from(crate::control::unix_ms()).unwrap_or(i64::MAX);
            db.add_user(&name, &password, now)
                .map_err(|e| e.to_string())?;
            Ok(format!("user {name} added"))
        }
        UserCommand::Remove { name } => {
            db.remove_user(&name).map_err(|e| e.to_string())?;
            Ok(format!("user {name} removed"))
        }
        UserCommand::Passwd { name, password } => {
            let password = password_or_stdin(password)?;
            db.set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            Ok(format!("password of {name} changed"))
        }
        UserCommand::List => {
            let users = db.list_users().map_err(|e| e.to_string())?;
            let rows: Vec<Value> = users
                .iter()
                .map(|u| {
                    let at = std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(u.created_ms).unwrap_or(0));
                    json!({ "Name": u.name, "Created": humantime::format_rfc3339_seconds(at).to_string() })
                })
                .collect();
            Ok(table(&Value::Array(rows), &["Name", "Created"]))
        }
    }
}

/// `ctl agents`: as `ctl users`, on the agents table.
fn manage_agents(config: &Config, command: AgentCommand) -> Result<String, String> {
    let mut db = open_store(config)?;
    match command {
        AgentCommand::Add {
            id,
            password,
            inspector,
        } => {
            let password = password_or_stdin(password)?;
            let now = i64::try_from(crate::control::unix_ms()).unwrap_or(i64::MAX);
            db.add_agent(id, &password, inspector, now)
                .map_err(|e| e.to_string())?;
            Ok(format!("agent {id} added"))
        }
        AgentCommand::Remove { id } => {
            db.remove_agent(id).map_err(|e| e.to_string())?;
            Ok(format!("agent {id} removed"))
        }
        AgentCommand::Passwd { id, password } => {
            let password = password_or_stdin(password)?;
            db.set_agent_password(id, &password)
                .map_err(|e| e.to_string())?;
            Ok(format!("password of agent {id} changed"))
        }
        AgentCommand::List => {
            let agents = db.list_agents().map_err(|e| e.to_string())?;
            let rows: Vec<Value> = agents
                .iter()
                .map(|a| {
                    let at = std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(a.created_ms).unwrap_or(0));
                    json!({
                        "Agent": a.agent_id.to_string(),
                        "Inspector": if a.inspector { "yes" } else { "no" },
                        "Created": humantime::format_rfc3339_seconds(at).to_string(),
                    })
                })
                .collect();
            Ok(table(
                &Value::Array(rows),
                &["Agent", "Inspector", "Created"],
            ))
        }
    }
}

/// Root creating the database (before the service ever ran) would leave files the service's
/// user cannot write: they go to the owner of their directory (the service's state directory).
/// The store the config names (as node `[app] node_id`); an SQLite file created by root is
/// given to its directory's owner (the service user).
fn open_store(config: &Config) -> Result<crate::store::Db, String> {
    let location = config.store.location();
    let db = crate::store::Db::connect(&location, config.app.node_id)
        .map_err(|e| format!("{}: {e}", location.describe()))?;
    if let crate::store::Location::Sqlite(path) = &location {
        give_to_directory_owner(path);
    }
    Ok(db)
}

fn give_to_directory_owner(db: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Some(owner) = db
        .parent()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .map(|m| (m.uid(), m.gid()))
    else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        let mine = std::fs::metadata(&path).is_ok_and(|m| (m.uid(), m.gid()) != owner);
        if mine {
            // Only root may give files away; anyone else already owns what they created.
            let _ = std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1));
        }
    }
}

/// The password given, else the first line of standard input (without its line end).
fn password_or_stdin(password: Option<String>) -> Result<String, String> {
    if let Some(p) = password {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("empty password (give --password or one line on standard input)".into());
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_show_their_parties_in_one_cell() {
        let calls = json!([
            {"CallId": "1", "Parties": [{"DN": "5551001", "ConnectionId": "3"}, {"DN": "", "ConnectionId": "4"}]},
            {"CallId": "2", "Parties": null}
        ]);
        let rows = with_party_summary(&calls);
        assert_eq!(rows[0]["Parties"], "5551001/3,-/4");
        assert_eq!(rows[1]["Parties"], Value::Null);
    }

    #[test]
    fn table_aligns_columns_and_counts_rows() {
        let rows = json!([{"A": "1", "B": null}, {"A": "long-value", "B": 7}]);
        let t = table(&rows, &["A", "B"]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A           B");
        assert_eq!(lines[1], "1           -");
        assert_eq!(lines[2], "long-value  7");
        assert_eq!(lines[3], "(2 total)");
    }

    #[test]
    fn wildcard_api_address_is_reached_on_loopback() {
        assert_eq!(
            loopback_if_wildcard("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            loopback_if_wildcard("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse::<SocketAddr>().unwrap()
        );
    }
}
