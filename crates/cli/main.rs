//! `agentauth`: the command line. Parses arguments, validates them into a
//! configuration, wires the store, the plugin host and the server, and
//! runs until SIGINT or SIGTERM.

mod admin;
mod config;
mod plugin_test;
mod telemetry;
mod versions;

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentauth_plugin_host::HookKind;
use agentauth_server::{App, Config, RealmSettings};
use agentauth_store::Storage;
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "agentauth", version, about = "An OAuth 2.0 authorization server for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to standard error: `text` for people, or
    /// `json`, one object per line (timestamp, level, target, message, the
    /// event's fields; `spans`, every span the line is in, the request's
    /// first (request_id, trace_id, realm, client_id); and `span`, the
    /// innermost of them). `serve` also takes it from its config file.
    #[arg(long, global = true, value_enum, env = "AGENTAUTH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// The formats of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// Logs to standard error in `format`, at the level `RUST_LOG` says (info
/// by default, without the compiler's chatter); with `traces`, also
/// exports spans over OTLP.
fn init_logging(format: LogFormat, traces: Option<telemetry::Traces>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_filter(filter).boxed()
        }
        LogFormat::Json => {
            logs.json().flatten_event(true).with_current_span(true).with_span_list(true).with_filter(filter).boxed()
        }
    };
    // Each layer filters for itself: the log's level does not limit which
    // spans are exported, and without an exporter, spans below the log's
    // level are never made.
    let registry = tracing_subscriber::registry().with(logs);
    match traces {
        Some(traces) => {
            registry.with(traces.layer()).init();
            agentauth_server::export_traces();
        }
        None => registry.init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Check a `serve` config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage a realm's plugins on a running server, or test one locally.
    #[command(subcommand)]
    Plugin(admin::PluginCommand),
    /// Configure a realm on a running server.
    #[command(subcommand)]
    Realm(admin::RealmCommand),
    /// Rotate or list a realm's signing keys on a running server.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Manage a realm's local users on a running server.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// List, disable, enable or delete a realm's clients (agents among
    /// them) on a running server.
    #[command(subcommand)]
    Client(admin::ClientCommand),
    /// Manage the issuers outside a realm whose JWTs it accepts (ID-JAG,
    /// JWT bearer grants, workload client authentication, upstream login).
    #[command(subcommand)]
    Trust(admin::TrustCommand),
    /// Apply the database's pending schema migrations, and say which
    /// version it is at. `serve` migrates at start too (on PostgreSQL under
    /// a lock, so replicas starting together migrate once); this runs them
    /// on demand, before a rollout.
    Migrate {
        /// A PostgreSQL URL, as for `serve --database`.
        #[arg(long, value_name = "URL", env = "AGENTAUTH_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// The SQLite data directory, without --database.
        #[arg(long, env = "AGENTAUTH_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Copy the SQLite database consistently, even while the server runs.
    /// The copy holds private keys sealed under the master key, which is
    /// not in it: keep the master key apart, and safe. (On PostgreSQL, use
    /// pg_dump.)
    Backup {
        /// The server's data directory.
        #[arg(long, env = "AGENTAUTH_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Set when the server runs on PostgreSQL: refused, with what to
        /// use instead.
        #[arg(long, value_name = "URL", env = "AGENTAUTH_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// Where to write the copy; it must not exist.
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place as the database of a data directory that has
    /// none (the server must not be running there). Checks it first.
    Restore {
        /// The backup made by `agentauth backup`.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to restore into.
        #[arg(long, env = "AGENTAUTH_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Set when the server runs on PostgreSQL: refused, with what to
        /// use instead.
        #[arg(long, value_name = "URL", env = "AGENTAUTH_DATABASE", hide_env_values = true)]
        database: Option<String>,
    },
    /// Internal: compile one plugin component, read on stdin, within the
    /// given bounds, and write the compiled artifact on stdout. `serve`
    /// runs it for every upload.
    #[command(hide = true)]
    CompilePlugin {
        #[arg(long)]
        cpu_seconds: u64,
        #[arg(long)]
        memory_bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check FILE as `serve --config FILE` would read it, with the
    /// environment and the defaults, without starting anything: print the
    /// settings it resolves to (no secrets), or what is wrong with which
    /// key, and exit non-zero.
    Check {
        /// The config file.
        file: PathBuf,
        /// How to print the settings.
        #[arg(long, value_enum, default_value = "toml")]
        format: config::Format,
    },
}

/// The settings of `serve`. Each but `--demo` is also read from the
/// environment variable named beside it, and each from the config file
/// (`--config`) under its name in snake_case; a flag beats the
/// environment, which beats the file, which beats the default.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings, keyed by the flags' names in snake_case
    /// (`workers = 8`; `--metrics-listen` is `listen` in a `[metrics]`
    /// table), for those neither a flag nor the environment gives.
    /// Secrets are refused there: the admin token and master key come
    /// from the environment or --master-key-file. `agentauth config check
    /// FILE` checks one.
    #[arg(long, value_name = "FILE", env = "AGENTAUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on. Port 0 picks a free port; the address in use
    /// is printed on standard output.
    #[arg(long, env = "AGENTAUTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory holding the SQLite database (and, by default, the master
    /// key file). Created if missing.
    #[arg(long, env = "AGENTAUTH_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Keep every realm's state in PostgreSQL instead of SQLite:
    /// `postgres://user:password@host:port/database`. Replicas started on
    /// one database share it, each acting on the others' changes within a
    /// second; they must share the master key too (AGENTAUTH_MASTER_KEY or
    /// --master-key-file), and the admin token.
    #[arg(long, value_name = "URL", env = "AGENTAUTH_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Most PostgreSQL connections this replica opens (with --database).
    #[arg(long, value_name = "N", env = "AGENTAUTH_DATABASE_POOL", default_value = "16")]
    database_pool: NonZeroUsize,
    /// The origin clients use to reach the server, e.g.
    /// https://am.example.com:8443. Issuers and endpoint URLs start with it.
    /// Defaults to http://<listen address>.
    #[arg(long, value_name = "URL", env = "AGENTAUTH_PUBLIC_URL")]
    public_url: Option<String>,
    /// Path prefix of the OAuth endpoints (`/am` as in PingAM; "" for none).
    #[arg(long, env = "AGENTAUTH_BASE_PATH", default_value = "/am")]
    base_path: String,
    /// Create realm `alpha` as the PingAM "AI agent acting autonomously"
    /// example configures it, unless it exists: AI agents and open
    /// registration enabled, the software-agent DCR policy selected, the
    /// software-agent may-act policy stored.
    #[arg(long)]
    demo: bool,
    /// Development only: let the server fetch documents from outside
    /// (trusted issuers' keys, client metadata documents) from loopback
    /// addresses, over plain HTTP too, to test against issuers on this
    /// machine. Never any other private address.
    #[arg(long, env = "AGENTAUTH_DEV_LOOPBACK_FETCH")]
    dev_loopback_fetch: bool,
    /// File holding the master key that seals private keys at rest (32
    /// bytes, base64url). Default: DATA_DIR/master.key, created with a new
    /// key for a new database. AGENTAUTH_MASTER_KEY, if set, wins.
    #[arg(long, value_name = "FILE", env = "AGENTAUTH_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Development mode: load DIR/<realm>/<plugin-name>.wasm into the realm,
    /// and again whenever the file changes (validated, then activated).
    #[arg(long, value_name = "DIR", env = "AGENTAUTH_WATCH_PLUGINS")]
    watch_plugins: Option<PathBuf>,
    /// Most connections open at once. Past it, new connections wait to be
    /// accepted until one closes. Default: the open-file limit (raised to
    /// its hard limit at start) less up to 256 kept for the server's own
    /// files, at most 16384.
    #[arg(long, value_name = "N", env = "AGENTAUTH_MAX_CONNECTIONS")]
    max_connections: Option<NonZeroUsize>,
    /// Most connections open at once from one source: an IPv4 address, or
    /// an IPv6 /64. Past it, new connections from that source are answered
    /// 503 and closed. Default: an eighth of --max-connections, at most
    /// 256. Behind a reverse proxy every connection comes from the proxy:
    /// set it to --max-connections there.
    #[arg(long, value_name = "N", env = "AGENTAUTH_MAX_CONNECTIONS_PER_SOURCE")]
    max_connections_per_source: Option<NonZeroUsize>,
    /// Seconds a connection may wait for its next request (keep-alive), or
    /// take to send a request head, before it is closed.
    #[arg(long, value_name = "SECS", env = "AGENTAUTH_IDLE_TIMEOUT", default_value = "10")]
    idle_timeout: NonZeroU64,
    /// Seconds the responses may stay unsent because the client does not
    /// read them (pipelined requests, a closed receive window) before the
    /// connection is reset. A client reading a trickle counts as not
    /// reading.
    #[arg(long, value_name = "SECS", env = "AGENTAUTH_WRITE_TIMEOUT", default_value = "10")]
    write_timeout: NonZeroU64,
    /// Threads that run the handlers' blocking work (storage, signing,
    /// plugin calls). Default: four per core, which keeps durable writes
    /// grouped in shared commits; a server that issues only JWTs answers
    /// faster, and more evenly, with one per core.
    #[arg(long, value_name = "N", env = "AGENTAUTH_WORKERS")]
    workers: Option<NonZeroUsize>,
    /// CPU seconds one plugin compilation may take; an upload that needs
    /// more is refused. Compilations run one at a time, in a child process.
    #[arg(long, value_name = "SECONDS", env = "AGENTAUTH_PLUGIN_COMPILE_CPU_SECONDS",
          default_value_t = agentauth_plugin_host::COMPILE_CPU_SECONDS,
          value_parser = clap::value_parser!(u64).range(config::COMPILE_CPU_SECONDS))]
    plugin_compile_cpu_seconds: u64,
    /// Memory one plugin compilation may use, in MiB (its address space).
    #[arg(long, value_name = "MIB", env = "AGENTAUTH_PLUGIN_COMPILE_MEMORY_MIB",
          default_value_t = agentauth_plugin_host::COMPILE_MEMORY_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(config::COMPILE_MEMORY_MIB))]
    plugin_compile_memory_mib: u64,
    /// Address of a separate listener serving only GET /metrics, without
    /// authentication: bind it to an internal interface.
    #[arg(long, value_name = "ADDR", env = "AGENTAUTH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Export traces over OTLP/HTTP to this collector, e.g.
    /// http://127.0.0.1:4318 (spans go to its /v1/traces): the request, the
    /// client's authentication, each plugin call, signing and the store's
    /// writes. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (the
    /// default) or `http/json`; `OTEL_SERVICE_NAME` the service's name.
    /// Unset, nothing is exported and nothing is spent on it.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// Raises the soft open-file limit to the hard one (each connection is an
/// open file) and returns the limit in force.
fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            tracing::warn!("could not raise the open-file limit ({e}); keeping {soft}");
            soft
        }
    }
}

const DEMO_REALM: &str = "alpha";
const DEMO_DCR: &str = "software-agent-dcr";
const DEMO_MAY_ACT: &str = "software-agent-may-act";

fn main() -> ExitCode {
    let matches = Cli::command().long_version(versions::long().leak() as &str).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let log_source = matches.value_source("log_format");
    let outcome = match cli.command {
        Command::Serve(args) => {
            let serve = matches.subcommand_matches("serve");
            let sources =
                |id: &str| if id == "log_format" { log_source } else { serve.and_then(|m| m.value_source(id)) };
            // The config file is read before logging starts: it may say how
            // to log.
            config::Settings::resolve(args, cli.log_format, &sources).and_then(|settings| {
                let traces = settings.serve.otlp_endpoint.as_deref().map(telemetry::Traces::start).transpose()?;
                let exporter = traces.as_ref().map(telemetry::Traces::provider);
                init_logging(settings.log_format, traces);
                let served = serve_with(settings);
                // The spans of the last requests, still in their batch.
                if let Some(provider) = exporter {
                    telemetry::shut_down(&provider);
                }
                served
            })
        }
        command => {
            init_logging(cli.log_format, None);
            run(command, cli.log_format, log_source)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentauth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every command but `serve`, which `main` runs itself.
fn run(command: Command, log_format: LogFormat, log_source: Option<ValueSource>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) => unreachable!("main runs serve"),
        Command::Config(ConfigCommand::Check { file, format }) => config::check(&file, format, log_format, log_source),
        Command::Plugin(command) => admin::plugin(command),
        Command::Realm(command) => admin::realm(command),
        Command::Keys(command) => admin::keys(command),
        Command::User(command) => admin::user(command),
        Command::Client(command) => admin::client(command),
        Command::Trust(command) => admin::trust(command),
        Command::Migrate { database, data_dir } => migrate(database.as_deref(), &data_dir),
        Command::Backup { data_dir, to, database } => {
            refuse_on_postgres(database.as_deref(), "backup")?;
            let size = agentauth_store::Store::backup(&data_dir.join(DATABASE), &to)?;
            println!("wrote {} ({size} bytes); it needs this server's master key to be served", to.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { from, data_dir, database } => {
            refuse_on_postgres(database.as_deref(), "restore")?;
            restore(&from, &data_dir)
        }
        Command::CompilePlugin { cpu_seconds, memory_bytes } => {
            let limits = agentauth_plugin_host::CompileLimits { cpu_seconds, memory_bytes };
            let code = agentauth_plugin_host::run_compile_child(limits);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

/// The database's file name in the data directory.
const DATABASE: &str = "agentauth.sqlite3";

/// A database URL fit for a log line: whatever precedes `@` in its
/// authority (a user and password) left out.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a connection string)".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    format!("{scheme}://{host}{path}")
}

/// `backup` and `restore` copy the SQLite file; a PostgreSQL database has
/// its own tools, which copy it consistently while replicas run.
fn refuse_on_postgres(database: Option<&str>, command: &str) -> anyhow::Result<()> {
    if database.is_some() {
        bail!(
            "`agentauth {command}` copies the SQLite database of a data directory; this server's database is \
             PostgreSQL (--database or AGENTAUTH_DATABASE). Use PostgreSQL's tools instead: \
             `pg_dump --format=custom --file=agentauth.dump \"$AGENTAUTH_DATABASE\"` to back up (consistent while \
             replicas run), `pg_restore --dbname=<empty database> agentauth.dump` to restore. Either way the \
             private keys stay sealed under the master key, which is not in the dump: keep it apart, and safe."
        );
    }
    Ok(())
}

fn migrate(database: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match database {
        Some(url) => {
            let (from, to) = agentauth_store_postgres::PgStore::migrate(url).context("migrating the database")?;
            if from == to {
                println!("the database is at schema version {to}: nothing to do");
            } else {
                println!("migrated the database from schema version {from} to {to}");
            }
        }
        None => {
            let db = data_dir.join(DATABASE);
            if !db.exists() {
                bail!("{} does not exist: nothing to migrate", db.display());
            }
            agentauth_store::Store::open(&db).with_context(|| format!("migrating {}", db.display()))?;
            println!("{} is at the current schema version", db.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(from: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    agentauth_store::Store::integrity_check(from).with_context(|| format!("checking {}", from.display()))?;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let db = data_dir.join(DATABASE);
    if db.exists() {
        bail!("{} exists: restore into an empty data directory", db.display());
    }
    // Copy beside the target, sync, then rename: a crash leaves either no
    // database or the whole backup.
    let partial = data_dir.join(format!("{DATABASE}.restoring"));
    std::fs::copy(from, &partial).with_context(|| format!("copying {}", from.display()))?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).context("syncing the restored database")?;
    std::fs::rename(&partial, &db).with_context(|| format!("moving the copy to {}", db.display()))?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).context("syncing the data directory")?;
    println!(
        "restored {} into {}; start the server with the master key it was made with",
        from.display(),
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the server with `settings`, merged and checked.
fn serve_with(settings: config::Settings) -> anyhow::Result<ExitCode> {
    let open_files = raise_open_file_limit();
    let limits = settings.connection_limits(open_files)?;
    let config::Settings { serve: args, admin_token, .. } = settings;
    let (base_path, public_url) = (args.base_path.clone(), args.public_url.clone());
    let (store, data): (Arc<dyn Storage>, String) = match &args.database {
        Some(url) => {
            let options = agentauth_store_postgres::Options {
                pool_size: args.database_pool.get(),
                ..agentauth_store_postgres::Options::default()
            };
            let store = agentauth_store_postgres::PgStore::connect(url, options).context("opening the database")?;
            let data = format!("PostgreSQL {}", without_credentials(url));
            (Arc::new(store), data)
        }
        None => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
            let db = args.data_dir.join(DATABASE);
            let store = agentauth_store::Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
            (Arc::new(store), db.display().to_string())
        }
    };
    let master_key_file = args.master_key_file.clone().unwrap_or_else(|| args.data_dir.join("master.key"));
    let master_key = master_key(&*store, &master_key_file)?;

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr().context("reading the listening address")?;
        let public_url = public_url.unwrap_or_else(|| format!("http://{local}"));
        let admin = if admin_token.is_some() { "enabled" } else { "disabled (set AGENTAUTH_ADMIN_TOKEN)" };
        let config = Config {
            master_key: std::sync::Arc::new(master_key),
            admin_token,
            public_url: public_url.clone(),
            base_path: base_path.clone(),
            workers: args.workers.map(NonZeroUsize::get),
            versions: versions::json(),
            loopback_fetch: args.dev_loopback_fetch,
        };
        // Uploads are compiled by this binary in a child process, bounded
        // in CPU time and memory (see agentauth_plugin_host::Compiler).
        let compiler = agentauth_plugin_host::Compiler::Child {
            program: std::env::current_exe().context("locating the agentauth binary")?,
            args: vec!["compile-plugin".into()],
            limits: agentauth_plugin_host::CompileLimits {
                cpu_seconds: args.plugin_compile_cpu_seconds,
                memory_bytes: args.plugin_compile_memory_mib << 20,
            },
        };
        let host = agentauth_plugin_host::PluginHost::with_compiler(compiler)?;
        let app = App::with_plugin_host(config, store, host)?;
        // Follow other replicas' changes from before any realm is loaded,
        // so nothing loaded can predate where following starts.
        let follower = app.service.start_following()?;
        agentauth_server::follow_changes(&app, follower).context("starting the change follower")?;
        if args.demo {
            let settings = RealmSettings {
                ai_agents_enabled: true,
                open_registration: true,
                dcr_plugin: Some(DEMO_DCR.into()),
                // The example's provider signs with RS256.
                signing_alg: "RS256".into(),
                ..RealmSettings::default()
            };
            let plugins: &[(&str, HookKind, &[u8])] = &[
                (DEMO_DCR, HookKind::Dcr, agentauth_seed_policies::SOFTWARE_AGENT_DCR),
                (DEMO_MAY_ACT, HookKind::MayAct, agentauth_seed_policies::SOFTWARE_AGENT_MAY_ACT),
            ];
            if app.provision_realm(DEMO_REALM, &settings, plugins)? {
                tracing::info!(realm = DEMO_REALM, "created the demo realm");
            }
            let warm = std::sync::Arc::clone(&app);
            tokio::task::spawn_blocking(move || warm.warm_up(DEMO_REALM)).await.context("loading the demo realm")??;
        }
        // Every realm is loaded before the replica reports ready (/readyz);
        // it answers meanwhile, loading a realm on its first request.
        let warm = std::sync::Arc::clone(&app);
        tokio::task::spawn_blocking(move || warm.warm_up_all());
        tracing::info!(%data, admin, "agentauth listening on http://{local}, issuing as {public_url}{base_path}");
        tracing::info!(
            open_files,
            max_connections = limits.max_connections,
            max_per_source = limits.max_per_source,
            idle_timeout = ?limits.idle_timeout,
            write_timeout = ?limits.write_timeout,
            "connection limits"
        );
        if let Some(addr) = args.metrics_listen {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?;
            let local = metrics.local_addr().context("reading the metrics listening address")?;
            tracing::info!("metrics on http://{local}/metrics, without authentication");
            tokio::spawn(agentauth_server::serve_metrics(metrics, std::sync::Arc::clone(&app)));
        }
        println!("agentauth listening on http://{local}");
        tokio::spawn(agentauth_server::maintain_periodically(std::sync::Arc::clone(&app)));
        tokio::spawn(agentauth_server::deliver_events_periodically(std::sync::Arc::clone(&app)));
        if let Some(dir) = args.watch_plugins {
            tokio::spawn(agentauth_server::watch_plugins(std::sync::Arc::clone(&app), dir));
        }
        agentauth_server::serve(listener, std::sync::Arc::clone(&app), limits, shutdown_signal()).await;
        // The audit of the last decisions, still in its batch.
        let service = std::sync::Arc::clone(&app.service);
        let _ = tokio::task::spawn_blocking(move || service.flush_decisions()).await;
        tracing::info!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The master key: from AGENTAUTH_MASTER_KEY, else from `file`; a new
/// database with no key file gets a new key, written there with mode 0600.
/// A database already sealed under a key never gets a new one: a missing
/// key file stops the server instead.
fn master_key(store: &dyn Storage, file: &std::path::Path) -> anyhow::Result<agentauth_jose::MasterKey> {
    use agentauth_jose::MasterKey;
    if let Ok(text) = std::env::var("AGENTAUTH_MASTER_KEY") {
        return MasterKey::parse(&text).context("AGENTAUTH_MASTER_KEY");
    }
    match std::fs::read_to_string(file) {
        Ok(text) => MasterKey::parse(&text).with_context(|| format!("reading the master key from {}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store.has_server_secret(App::MASTER_KEY_CHECK)? {
                bail!(
                    "this database's keys are sealed with a master key, but {} is missing: \
                     restore it or set AGENTAUTH_MASTER_KEY",
                    file.display()
                );
            }
            let (key, text) = MasterKey::generate()?;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("creating {}", file.display()))?;
            out.write_all(text.as_bytes())
                .and_then(|()| out.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            tracing::info!(file = %file.display(), "made a new master key; keep it with backups, apart from the database");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading the master key from {}", file.display())),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn a_logged_database_url_has_no_credentials() {
        assert_eq!(without_credentials("postgres://u:s3cret@db:5432/agentauth"), "postgres://db:5432/agentauth");
        assert_eq!(without_credentials("postgres://db/agentauth?password=s3cret"), "postgres://db/agentauth");
        assert_eq!(without_credentials("postgresql://u@db"), "postgresql://db");
        assert_eq!(without_credentials("host=db password=s3cret"), "(a connection string)");
    }
}
