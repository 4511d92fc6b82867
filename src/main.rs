//! The `callbridge` command: run | check-config | version | ctl.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

use callbridge::app::{self, config::Config, config::LogFormat, ConfigSource, LogControl};
use callbridge::ctl::{self, AgentCommand, CtlCommand, UserCommand};

const DEFAULT_CONFIG: &str = "/etc/callbridge/callbridge.toml";

#[derive(Parser)]
#[command(name = "callbridge", version, about = "SIP/RTP media server appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Override a config key: section.key=<TOML value>. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Validate a config file; exits non-zero naming the bad key and line.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Print the version.
    Version,
    /// Operate a running server through its local API (address and token from the config).
    Ctl {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// List calls in progress (this node's, from its API).
    Calls {
        /// Every node's calls in progress, from the store they share ([store] url).
        #[arg(long)]
        cluster: bool,
    },
    /// List media connections.
    Connections,
    /// List conferences.
    Conferences,
    /// Show one connection with its statistics.
    Show { connection_id: String },
    /// Hang up a call (BYE; its connection is released).
    Hangup { call_id: String },
    /// Release a conference and every connection in it.
    ReleaseConference { conference_id: String },
    /// Reload the configuration (routes, tokens, log level) without dropping calls.
    Reload,
    /// Manage the recording API's users (in the store's database; the server need not run).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Manage the agent gateway's agents (in the store's database; the server need not run).
    Agents {
        #[command(subcommand)]
        action: AgentsAction,
    },
}

#[derive(Subcommand)]
enum AgentsAction {
    /// Add an agent (id 101-999999); without --password it is read from standard input.
    Add {
        id: i64,
        #[arg(long)]
        password: Option<String>,
        /// May query every conference (queryvdnconfid).
        #[arg(long)]
        inspector: bool,
    },
    /// Remove an agent.
    Remove { id: i64 },
    /// List the agents.
    List,
    /// Change an agent's password; without --password it is read from standard input.
    Passwd {
        id: i64,
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Add a user; without --password the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove a user.
    Remove { name: String },
    /// List the users.
    List,
    /// Change a user's password; without --password it is read from standard input.
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
}

/// glibc gives each thread that contends for the heap an arena of its own, up to 8 per core,
/// and a burst of calls leaves pages pinned in all of them, which `malloc_trim` cannot return
/// (see `app::MemoryReturn`). Four arenas serve the two runtime threads, the media workers and
/// the recorder without measurable contention, and a burst's memory comes back:
/// scripts/bench-overload at 4,500 and 9,000 setups/s, resident after the burst 154 MB with
/// glibc's default against 106 MB before it, 107 MB against 98 MB with four arenas (two cost
/// 3 % of the setup rate). Set before the runtime's threads start; `MALLOC_ARENA_MAX` in the
/// environment still decides when set.
/// Rust's allocations (the `jemalloc` feature, on by default; see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// glibc's malloc still serves the C libraries (SQLite, libopus): at most four arenas.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a setting of glibc's allocator, under its own lock.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 4) };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("callbridge {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config, overrides } => match Config::load(&config, &overrides) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl {
            config,
            overrides,
            action,
        } => {
            let config = match Config::load(&config, &overrides) {
                Ok(loaded) => loaded.config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let command = match action {
                CtlAction::Calls { cluster: false } => CtlCommand::Calls,
                CtlAction::Calls { cluster: true } => CtlCommand::ClusterCalls,
                CtlAction::Connections => CtlCommand::Connections,
                CtlAction::Conferences => CtlCommand::Conferences,
                CtlAction::Show { connection_id } => CtlCommand::Show(connection_id),
                CtlAction::Hangup { call_id } => CtlCommand::Hangup(call_id),
                CtlAction::ReleaseConference { conference_id } => {
                    CtlCommand::ReleaseConference(conference_id)
                }
                CtlAction::Reload => CtlCommand::Reload,
                CtlAction::Agents { action } => CtlCommand::Agents(match action {
                    AgentsAction::Add {
                        id,
                        password,
                        inspector,
                    } => AgentCommand::Add {
                        id,
                        password,
                        inspector,
                    },
                    AgentsAction::Remove { id } => AgentCommand::Remove { id },
                    AgentsAction::List => AgentCommand::List,
                    AgentsAction::Passwd { id, password } => AgentCommand::Passwd { id, password },
                }),
                CtlAction::Users { action } => CtlCommand::Users(match action {
                    UsersAction::Add { name, password } => UserCommand::Add { name, password },
                    UsersAction::Remove { name } => UserCommand::Remove { name },
                    UsersAction::List => UserCommand::List,
                    UsersAction::Passwd { name, password } => {
                        UserCommand::Passwd { name, password }
                    }
                }),
            };
            match ctl::run(&config, command) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("callbridge ctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, overrides } => {
            let source = ConfigSource {
                path: config.clone(),
                overrides: overrides.clone(),
            };
            let loaded = match Config::load(&config, &overrides) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let log = init_logging(&loaded.config.log.level, loaded.config.log.format);
            limit_malloc_arenas();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("control")
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::run(loaded, source, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "callbridge stopped");
                    eprintln!("callbridge: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs to the journal (structured fields) when systemd runs us, to stderr otherwise; returns
/// the handle that changes the filter on reload.
fn init_logging(level: &str, format: LogFormat) -> LogControl {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("log.level {level:?}: {e}; using \"info\"");
        EnvFilter::new("info")
    });
    let (filter, handle) = reload::Layer::new(filter);
    // systemd sets JOURNAL_STREAM for services whose stderr goes to the journal.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let output = match (journald, format) {
        (Some(journal), _) => journal.boxed(),
        (None, LogFormat::Json) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        (None, LogFormat::Text) => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
        handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    })
}
