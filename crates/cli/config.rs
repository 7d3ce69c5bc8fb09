//! The settings `serve` runs with: the command line, the environment, a
//! TOML config file (`serve --config FILE`) and the defaults, in that
//! order of precedence, merged first and then checked whatever their
//! source. `agentauth config check FILE` resolves and checks a file the
//! same way, and starts nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentauth_server::{AdminToken, ConnectionLimits};
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Args as _, CommandFactory as _, FromArgMatches as _};
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use crate::{Cli, LogFormat, ServeArgs};

/// The CPU seconds one plugin compilation may be given.
pub const COMPILE_CPU_SECONDS: RangeInclusive<u64> = 1..=3600;
/// The memory, in MiB, one plugin compilation may be given.
pub const COMPILE_MEMORY_MIB: RangeInclusive<u64> = 256..=65536;

/// A config file as written: every key optional, an unknown one refused.
/// The keys are the `serve` flags' names in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    base_path: Option<String>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    database_pool: Option<NonZeroUsize>,
    master_key_file: Option<PathBuf>,
    demo: Option<bool>,
    dev_loopback_fetch: Option<bool>,
    watch_plugins: Option<PathBuf>,
    max_connections: Option<NonZeroUsize>,
    max_connections_per_source: Option<NonZeroUsize>,
    idle_timeout: Option<NonZeroU64>,
    write_timeout: Option<NonZeroU64>,
    workers: Option<NonZeroUsize>,
    plugin_compile_cpu_seconds: Option<u64>,
    plugin_compile_memory_mib: Option<u64>,
    log_format: Option<LogFormat>,
    /// `--otlp-endpoint`.
    otlp_endpoint: Option<String>,
    metrics: Option<FileMetrics>,
}

/// The file's `[metrics]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    /// `--metrics-listen`.
    listen: Option<SocketAddr>,
}

/// Keys that would put a secret in the file, and where it goes instead.
const SECRETS: &[(&str, &str)] = &[
    ("admin_token", "set AGENTAUTH_ADMIN_TOKEN in the server's environment"),
    (
        "master_key",
        "set AGENTAUTH_MASTER_KEY in the server's environment, or name a file holding the key with master_key_file",
    ),
    ("database_password", "give the database URL with its password in AGENTAUTH_DATABASE instead"),
    ("password", "give the database URL with its password in AGENTAUTH_DATABASE instead"),
];

/// Reads and parses the config file `path`.
fn read(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
    parse(path, &text)
}

/// Parses `text`, the config file `path`. Errors name the file, the line
/// and the key.
fn parse(path: &Path, text: &str) -> anyhow::Result<FileSettings> {
    let file = path.display();
    // A syntax error: toml's own message shows the line and where in it.
    let document = DeTable::parse(text).map_err(|e| anyhow::anyhow!("{file}: {}", e.to_string().trim_end()))?;
    let mut keys = Vec::new();
    collect_keys(document.get_ref(), "", &mut keys);
    for (key, start) in &keys {
        let name = key.rsplit('.').next().unwrap_or(key);
        if let Some((_, instead)) = SECRETS.iter().find(|(secret, _)| *secret == name) {
            bail!(
                "{file}, line {}: `{key}` is a secret, which may not be in the config file: {instead}",
                line(text, *start)
            );
        }
    }
    toml::from_str(text).map_err(|e| {
        let Some(span) = e.span() else {
            return anyhow::anyhow!("{file}: {}", e.message());
        };
        let message = e.message().trim_end();
        // Unknown keys are named by the message; a wrong value is not.
        let key = key_at(document.get_ref(), span.start, "")
            .filter(|key| !message.contains(&format!("`{key}`")))
            .map(|key| format!(", `{key}`"))
            .unwrap_or_default();
        anyhow::anyhow!("{file}, line {}{key}: {message}", line(text, span.start))
    })
}

/// Every key of `table` and its tables, dotted, with where it starts.
fn collect_keys(table: &DeTable<'_>, prefix: &str, keys: &mut Vec<(String, usize)>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let DeValue::Table(inner) = value.get_ref() {
            collect_keys(inner, &path, keys);
        }
        keys.push((path, key.span().start));
    }
}

/// The dotted key whose name or value holds byte `at`.
fn key_at(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let DeValue::Table(inner) = value.get_ref()
            && let Some(found) = key_at(inner, at, &path)
        {
            return Some(found);
        }
        if key.span().contains(&at) || value.span().contains(&at) {
            return Some(path);
        }
    }
    None
}

/// The line (from 1) of byte `at` in `text`.
fn line(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    Environment,
    File,
    Default,
}

impl Origin {
    /// Where clap says it took a value (`None`: nowhere, the value is
    /// absent).
    fn of(source: Option<ValueSource>) -> Self {
        match source {
            Some(ValueSource::CommandLine) => Self::CommandLine,
            Some(ValueSource::EnvVariable) => Self::Environment,
            _ => Self::Default,
        }
    }
}

/// Where clap took each argument's value from, by argument id (the
/// field's name; `log_format` included).
pub type Sources<'a> = dyn Fn(&str) -> Option<ValueSource> + 'a;

/// The settings `serve` runs with, merged and checked.
#[derive(Debug)]
pub struct Settings {
    /// Every `serve` setting, the base path and public URL normalised.
    pub serve: ServeArgs,
    pub log_format: LogFormat,
    /// From `AGENTAUTH_ADMIN_TOKEN`; `None` disables the admin API.
    pub admin_token: Option<AdminToken>,
    /// The config file, if any.
    file: Option<PathBuf>,
    /// Where each setting came from, by argument id.
    origins: BTreeMap<&'static str, Origin>,
}

impl Settings {
    /// `args` (what clap took from the command line, the environment and
    /// the defaults, as `sources` says) and `log_format`, completed from
    /// the config file `args.config` names, if any, and checked.
    pub fn resolve(args: ServeArgs, log_format: LogFormat, sources: &Sources<'_>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => Some((path.clone(), read(path)?)),
            None => None,
        };
        let mut settings = Self::merge(args, log_format, sources, file);
        settings.check()?;
        Ok(settings)
    }

    /// Takes from `file` each setting clap took from its defaults, or
    /// did not have.
    fn merge(
        mut args: ServeArgs,
        log_format: LogFormat,
        sources: &Sources<'_>,
        file: Option<(PathBuf, FileSettings)>,
    ) -> Self {
        let (path, file) = match file {
            Some((path, settings)) => (Some(path), settings),
            None => (None, FileSettings::default()),
        };
        let mut origins = BTreeMap::new();
        let mut from_file = |id: &'static str, in_file: bool| {
            let origin = Origin::of(sources(id));
            let taken = in_file && origin == Origin::Default;
            origins.insert(id, if taken { Origin::File } else { origin });
            taken
        };
        macro_rules! merge {
            ($($id:ident = $value:expr),* $(,)?) => {$(
                let value = $value;
                if from_file(stringify!($id), value.is_some()) && let Some(value) = value {
                    args.$id = value.into();
                }
            )*};
        }
        merge!(
            listen = file.listen,
            public_url = file.public_url,
            base_path = file.base_path,
            data_dir = file.data_dir,
            database = file.database,
            database_pool = file.database_pool,
            master_key_file = file.master_key_file,
            demo = file.demo,
            dev_loopback_fetch = file.dev_loopback_fetch,
            watch_plugins = file.watch_plugins,
            max_connections = file.max_connections,
            max_connections_per_source = file.max_connections_per_source,
            idle_timeout = file.idle_timeout,
            write_timeout = file.write_timeout,
            workers = file.workers,
            plugin_compile_cpu_seconds = file.plugin_compile_cpu_seconds,
            plugin_compile_memory_mib = file.plugin_compile_memory_mib,
            otlp_endpoint = file.otlp_endpoint,
            metrics_listen = file.metrics.and_then(|metrics| metrics.listen),
        );
        let log_format = match file.log_format {
            Some(format) if from_file("log_format", true) => format,
            _ => log_format,
        };
        Self { serve: args, log_format, admin_token: None, file: path, origins }
    }

    /// Every check that needs neither the network nor the database.
    fn check(&mut self) -> anyhow::Result<()> {
        self.serve.base_path = check_base_path(&self.serve.base_path).with_context(|| self.describe("base_path"))?;
        self.serve.public_url = (self.serve.public_url.as_deref().map(check_public_url).transpose())
            .with_context(|| self.describe("public_url"))?;
        let cpu = self.serve.plugin_compile_cpu_seconds;
        if !COMPILE_CPU_SECONDS.contains(&cpu) {
            bail!("{}: {cpu} is not in {COMPILE_CPU_SECONDS:?}", self.describe("plugin_compile_cpu_seconds"));
        }
        let memory = self.serve.plugin_compile_memory_mib;
        if !COMPILE_MEMORY_MIB.contains(&memory) {
            bail!("{}: {memory} is not in {COMPILE_MEMORY_MIB:?}", self.describe("plugin_compile_memory_mib"));
        }
        if self.serve.database.is_some()
            && std::env::var_os("AGENTAUTH_MASTER_KEY").is_none()
            && self.serve.master_key_file.is_none()
        {
            bail!(
                "replicas on one PostgreSQL database must share one master key: give every replica the same \
                 AGENTAUTH_MASTER_KEY or --master-key-file (a missing file is made with a new key if the \
                 database has none yet)"
            );
        }
        self.admin_token = match std::env::var("AGENTAUTH_ADMIN_TOKEN") {
            Ok(token) => Some(AdminToken::new(token).context("AGENTAUTH_ADMIN_TOKEN")?),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => bail!("AGENTAUTH_ADMIN_TOKEN is not valid UTF-8"),
        };
        Ok(())
    }

    /// The connection limits, within what `open_files` (the process's
    /// open-file limit) can hold.
    pub fn connection_limits(&self, open_files: u64) -> anyhow::Result<ConnectionLimits> {
        let args = &self.serve;
        let mut limits = ConnectionLimits::for_open_files(open_files);
        if let Some(max) = args.max_connections {
            let allowed = ConnectionLimits::allowed_by(open_files);
            if max.get() > allowed {
                bail!(
                    "{}: {max} is more than the open-file limit ({open_files}) allows: at most {allowed}; raise \
                     the limit (ulimit -n) or lower it",
                    self.describe("max_connections")
                );
            }
            limits.max_connections = max.get();
            limits.max_per_source = ConnectionLimits::default_per_source(max.get());
        }
        if let Some(max) = args.max_connections_per_source {
            limits.max_per_source = max.get();
        }
        limits.idle_timeout = std::time::Duration::from_secs(args.idle_timeout.get());
        limits.write_timeout = std::time::Duration::from_secs(args.write_timeout.get());
        Ok(limits)
    }

    /// Where setting `id` came from.
    pub fn origin(&self, id: &str) -> Origin {
        self.origins.get(id).copied().unwrap_or(Origin::Default)
    }

    /// Names setting `id` as its source does: `base_path in FILE`,
    /// `AGENTAUTH_BASE_PATH`, or `--base-path`.
    fn describe(&self, id: &str) -> String {
        let flag = format!("--{}", id.replace('_', "-"));
        match (self.origin(id), &self.file) {
            (Origin::File, Some(file)) => format!("{} in {}", file_key(id), file.display()),
            (Origin::Environment, _) => env_name(id).unwrap_or(flag),
            _ => flag,
        }
    }

    /// What `config check` prints: the settings, and no secret.
    fn shown(&self) -> Shown<'_> {
        let args = &self.serve;
        Shown {
            listen: args.listen,
            public_url: args.public_url.as_deref(),
            base_path: &args.base_path,
            data_dir: &args.data_dir,
            database: args.database.as_deref().map(crate::without_credentials),
            database_pool: args.database_pool.get(),
            master_key_file: args.master_key_file.as_deref(),
            demo: args.demo,
            dev_loopback_fetch: args.dev_loopback_fetch,
            watch_plugins: args.watch_plugins.as_deref(),
            max_connections: args.max_connections.map(NonZeroUsize::get),
            max_connections_per_source: args.max_connections_per_source.map(NonZeroUsize::get),
            idle_timeout: args.idle_timeout.get(),
            write_timeout: args.write_timeout.get(),
            workers: args.workers.map(NonZeroUsize::get),
            plugin_compile_cpu_seconds: args.plugin_compile_cpu_seconds,
            plugin_compile_memory_mib: args.plugin_compile_memory_mib,
            log_format: self.log_format,
            metrics: ShownMetrics { listen: args.metrics_listen },
        }
    }
}

/// A setting's key in the file: its argument id, but `metrics.listen`.
fn file_key(id: &str) -> &str {
    if id == "metrics_listen" { "metrics.listen" } else { id }
}

/// The environment variable clap reads argument `id` from, if any.
fn env_name(id: &str) -> Option<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve")?;
    let arg = cli.get_arguments().chain(serve.get_arguments()).find(|arg| arg.get_id() == id)?;
    arg.get_env().map(|name| name.to_string_lossy().into_owned())
}

/// The settings as `config check` prints them, in the file's format; a
/// setting left out takes its default when the server starts.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_url: Option<&'a str>,
    base_path: &'a str,
    data_dir: &'a Path,
    /// Without its user and password.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    database_pool: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    master_key_file: Option<&'a Path>,
    demo: bool,
    dev_loopback_fetch: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_plugins: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_source: Option<usize>,
    idle_timeout: u64,
    write_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    plugin_compile_cpu_seconds: u64,
    plugin_compile_memory_mib: u64,
    log_format: LogFormat,
    metrics: ShownMetrics,
}

#[derive(Debug, Serialize)]
struct ShownMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
}

/// How `config check` prints the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Toml,
    Json,
}

/// `agentauth config check FILE`: resolves FILE with the environment and
/// the defaults as `serve --config FILE` would, checks the result as far
/// as can be without the network or the database, and prints it. Creates
/// nothing, starts nothing.
pub fn check(
    file: &Path,
    format: Format,
    log_format: LogFormat,
    log_source: Option<ValueSource>,
) -> anyhow::Result<ExitCode> {
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let matches = command.try_get_matches_from(["serve"]).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
    let mut args = ServeArgs::from_arg_matches(&matches)?;
    args.config = Some(file.to_path_buf());
    let sources = |id: &str| if id == "log_format" { log_source } else { matches.value_source(id) };
    let settings = Settings::resolve(args, log_format, &sources)?;
    settings.connection_limits(crate::raise_open_file_limit())?;
    let shown = settings.shown();
    let text = match format {
        Format::Toml => toml::to_string(&shown).context("writing the settings as TOML")?,
        Format::Json => serde_json::to_string_pretty(&shown).context("writing the settings as JSON")? + "\n",
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The base path without a trailing `/`: empty, or a plain path.
fn check_base_path(path: &str) -> anyhow::Result<String> {
    let path = path.trim_end_matches('/');
    if !path.is_empty() && !path.starts_with('/') {
        bail!("the base path must be empty or start with '/': {path:?}");
    }
    if path.contains(['?', '#', ' ']) {
        bail!("the base path must be a plain path: {path:?}");
    }
    Ok(path.to_string())
}

/// The public URL without a trailing `/`: an http(s) origin, and maybe a
/// path.
fn check_public_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        bail!("the public URL must start with https:// or http://: {url:?}");
    };
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        bail!("the public URL must be an origin with an optional path, no query or fragment: {url:?}");
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    const FILE: &str = "agentauth.toml";

    /// `agentauth <argv>` (which must be a `serve`), completed from the
    /// config file `text` and checked. The ids in `env` are reported as
    /// clap reports a value it read from the environment.
    fn resolve(argv: &[&str], env: &[&str], text: &str) -> anyhow::Result<Settings> {
        let matches = Cli::command().try_get_matches_from([&["agentauth"], argv].concat())?;
        let cli = Cli::from_arg_matches(&matches)?;
        let Command::Serve(args) = cli.command else { panic!("not serve: {argv:?}") };
        let serve = matches.subcommand_matches("serve").expect("serve's arguments");
        let sources = |id: &str| match id {
            _ if env.contains(&id) => Some(ValueSource::EnvVariable),
            "log_format" => matches.value_source(id),
            _ => serve.value_source(id),
        };
        let file = parse(Path::new(FILE), text)?;
        let mut settings = Settings::merge(args, cli.log_format, &sources, Some((FILE.into(), file)));
        settings.check()?;
        Ok(settings)
    }

    const FILE_TEXT: &str = r#"
        listen = "127.0.0.1:7001"
        workers = 3
        log_format = "json"
        base_path = "/auth/"
        public_url = "https://auth.example.test/"
        database_pool = 4

        [metrics]
        listen = "127.0.0.1:9100"
    "#;

    #[test]
    fn the_file_beats_the_defaults() {
        let settings = resolve(&["serve"], &[], FILE_TEXT).unwrap();
        assert_eq!(settings.serve.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(settings.serve.workers, NonZeroUsize::new(3));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.serve.database_pool.get(), 4);
        assert_eq!(settings.serve.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        // Checked and normalised like a flag's value.
        assert_eq!(settings.serve.base_path, "/auth");
        assert_eq!(settings.serve.public_url.as_deref(), Some("https://auth.example.test"));
        for id in ["listen", "workers", "log_format", "metrics_listen"] {
            assert_eq!(settings.origin(id), Origin::File, "{id}");
        }
        // What the file leaves out keeps its default.
        assert_eq!(settings.serve.idle_timeout.get(), 10);
        assert_eq!(settings.serve.data_dir, Path::new("data"));
        assert_eq!(settings.origin("data_dir"), Origin::Default);
        assert_eq!(settings.origin("max_connections"), Origin::Default);
    }

    #[test]
    fn the_defaults_stand_without_a_file_key() {
        let settings = resolve(&["serve"], &[], "").unwrap();
        assert_eq!(settings.serve.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.serve.workers, None);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.serve.base_path, "/am");
    }

    #[test]
    fn the_environment_beats_the_file() {
        // Clap reads the environment; these values arrive as if it had.
        let argv = ["serve", "--listen", "127.0.0.1:7002", "--workers", "5", "--log-format", "text"];
        let settings = resolve(&argv, &["listen", "workers", "log_format"], FILE_TEXT).unwrap();
        assert_eq!(settings.serve.listen, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(settings.serve.workers, NonZeroUsize::new(5));
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.origin("workers"), Origin::Environment);
        assert_eq!(settings.describe("workers"), "AGENTAUTH_WORKERS");
        // The rest still comes from the file.
        assert_eq!(settings.serve.database_pool.get(), 4);
    }

    #[test]
    fn flags_beat_the_file() {
        let argv = ["serve", "--listen", "127.0.0.1:7003", "--workers", "7", "--base-path", ""];
        let settings = resolve(&argv, &[], FILE_TEXT).unwrap();
        assert_eq!(settings.serve.listen, "127.0.0.1:7003".parse().unwrap());
        assert_eq!(settings.serve.workers, NonZeroUsize::new(7));
        assert_eq!(settings.serve.base_path, "");
        assert_eq!(settings.origin("listen"), Origin::CommandLine);
        // The global flag, before or after the subcommand.
        for argv in [&["--log-format", "text", "serve"][..], &["serve", "--log-format", "text"]] {
            let settings = resolve(argv, &[], FILE_TEXT).unwrap();
            assert_eq!(settings.log_format, LogFormat::Text, "{argv:?}");
            assert_eq!(settings.origin("log_format"), Origin::CommandLine, "{argv:?}");
        }
    }

    #[test]
    fn a_flag_set_to_its_default_value_still_beats_the_file() {
        let settings = resolve(&["serve", "--listen", "127.0.0.1:8080"], &[], FILE_TEXT).unwrap();
        assert_eq!(settings.serve.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn an_unknown_key_is_refused_by_name_and_line() {
        let e = resolve(&["serve"], &[], "workers = 2\nlisten_address = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(e.starts_with("agentauth.toml, line 2"), "{e}");
        assert!(e.contains("unknown field `listen_address`"), "{e}");
        let e = resolve(&["serve"], &[], "[metrics]\nport = 9100\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`port`"), "{e}");
        let e = resolve(&["serve"], &[], "[logging]\nformat = \"json\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`logging`"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_with_its_key_and_line() {
        let e = resolve(&["serve"], &[], "demo = true\nworkers = \"four\"\n").unwrap_err().to_string();
        assert!(e.starts_with("agentauth.toml, line 2, `workers`: invalid type"), "{e}");
        let e = resolve(&["serve"], &[], "workers = 0\n").unwrap_err().to_string();
        assert!(e.contains("line 1, `workers`"), "{e}");
        let e = resolve(&["serve"], &[], "listen = \"localhost\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1, `listen`"), "{e}");
        let e = resolve(&["serve"], &[], "[metrics]\nlisten = 9100\n").unwrap_err().to_string();
        assert!(e.contains("line 2, `metrics.listen`"), "{e}");
        let e = resolve(&["serve"], &[], "log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1, `log_format`"), "{e}");
        let e = resolve(&["serve"], &[], "workers = 2\nworkers = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn secrets_are_refused_with_where_they_belong() {
        for (text, line, belongs) in [
            ("admin_token = \"0123456789abcdef0123\"\n", 1, "AGENTAUTH_ADMIN_TOKEN"),
            ("workers = 2\nmaster_key = \"abc\"\n", 2, "master_key_file"),
            ("database_password = \"s3cret\"\n", 1, "AGENTAUTH_DATABASE"),
            ("[metrics]\nlisten = \"127.0.0.1:9100\"\npassword = \"s3cret\"\n", 3, "AGENTAUTH_DATABASE"),
        ] {
            let e = resolve(&["serve"], &[], text).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}")) && e.contains("is a secret"), "{e}");
            assert!(e.contains(belongs), "{e}");
            assert!(!e.contains("s3cret") && !e.contains("0123456789abcdef"), "{e}");
        }
    }

    #[test]
    fn a_database_url_with_its_password_is_allowed_and_never_shown() {
        let text = "database = \"postgres://agentauth:s3cret@db.internal/agentauth\"\nmaster_key_file = \"k\"\n";
        let settings = resolve(&["serve"], &[], text).unwrap();
        assert_eq!(settings.serve.database.as_deref(), Some("postgres://agentauth:s3cret@db.internal/agentauth"));
        let shown = toml::to_string(&settings.shown()).unwrap();
        assert!(shown.contains("database = \"postgres://db.internal/agentauth\""), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn values_from_the_file_are_checked_like_flags_and_named_by_key() {
        for (text, key) in [
            ("base_path = \"am\"\n", "base_path in agentauth.toml"),
            ("public_url = \"auth.example.test\"\n", "public_url in agentauth.toml"),
            ("plugin_compile_cpu_seconds = 0\n", "plugin_compile_cpu_seconds in agentauth.toml"),
            ("plugin_compile_memory_mib = 16\n", "plugin_compile_memory_mib in agentauth.toml"),
        ] {
            let e = format!("{:#}", resolve(&["serve"], &[], text).unwrap_err());
            assert!(e.starts_with(key), "{e}");
        }
        let e = format!("{:#}", resolve(&["serve", "--base-path", "am"], &[], "").unwrap_err());
        assert!(e.starts_with("--base-path: the base path must"), "{e}");
        // PostgreSQL without a master key given, from the file as from a flag.
        let e = resolve(&["serve"], &[], "database = \"postgres://db/agentauth\"\n").unwrap_err().to_string();
        assert!(e.contains("must share one master key"), "{e}");
        // Connection limits are checked against the open-file limit.
        let settings = resolve(&["serve"], &[], "max_connections = 100000\n").unwrap();
        let e = settings.connection_limits(1024).unwrap_err().to_string();
        assert!(e.starts_with("max_connections in agentauth.toml: 100000 is more"), "{e}");
        assert_eq!(settings.connection_limits(1 << 20).unwrap().max_connections, 100_000);
    }

    #[test]
    fn what_check_prints_is_a_config_file_that_resolves_the_same() {
        let settings = resolve(&["serve"], &[], FILE_TEXT).unwrap();
        let printed = toml::to_string(&settings.shown()).unwrap();
        let again = resolve(&["serve"], &[], &printed).unwrap();
        assert_eq!(toml::to_string(&again.shown()).unwrap(), printed);
        assert!(printed.contains("[metrics]\nlisten = \"127.0.0.1:9100\""), "{printed}");
    }
}
