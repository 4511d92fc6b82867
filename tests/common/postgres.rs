//! A throw-away PostgreSQL server (Debian's `postgresql` package) for end-to-end tests: a new
//! cluster in a temp directory, listening on a Unix socket there only, run as the `postgres`
//! user when the tests run as root (initdb refuses root; CI runs as root), stopped and removed
//! when the guard drops. The same recipe as scripts/with-postgres.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    user: String,
}

impl Postgres {
    /// Starts a server; panics, naming scripts/setup-system, when PostgreSQL is not installed.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .max()
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL is not installed: run ./scripts/setup-system (as root), which \
                     installs the Debian package postgresql"
                )
            });
        let dir = tempfile::Builder::new()
            .prefix("callbridge-pg")
            .tempdir()
            .expect("temp dir")
            .keep();
        let root = unsafe { libc::getuid() } == 0;
        let user = if root {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown the cluster's directory to postgres"
            );
            "postgres".to_string()
        } else {
            std::env::var("USER").unwrap_or_else(|_| "postgres".to_string())
        };
        let server = Postgres { dir, bin, user };
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                &server.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            server.dir.display()
        );
        let log = server.dir.join("server.log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        server
    }

    /// A connection string for database `name` (created by [`Postgres::create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!(
            "host={} user={} dbname={name}",
            self.dir.display(),
            self.user
        )
    }

    pub fn create_database(&self, name: &str) {
        let url = self.url("postgres");
        let sql = format!("CREATE DATABASE {name}");
        // The blocking client on a thread of its own (never inside an async runtime).
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            client.batch_execute(&sql).expect("create database");
        })
        .join()
        .expect("database created");
    }

    /// Runs one query on database `name`; its rows' first columns as text.
    pub fn query_texts(&self, name: &str, sql: &str) -> Vec<String> {
        let url = self.url(name);
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            client
                .query(&sql, &[])
                .expect("query")
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect()
        })
        .join()
        .expect("query ran")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program` of the server's binaries, run as the cluster's owner (`postgres` when we are
    /// root: initdb and pg_ctl refuse root).
    fn command(&self, program: &str) -> Command {
        let binary = self.bin.join(program);
        if unsafe { libc::getuid() } == 0 {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
