//! `agentauth-bench`: starts the release `agentauth` on loopback with fresh
//! data directories, drives each hot path with a bounded load, measures
//! the physical limit of each in the same run, and writes the results
//! table into `docs/BENCHMARKS.md` (between its result markers).
//!
//!     make bench                      # builds, then runs this
//!     agentauth-bench --quick         # a short smoke run
//!
//! The same cases run again on PostgreSQL (a throwaway cluster, one
//! replica and then two on one database), unless `--no-postgres`.

mod limits;
mod load;
mod postgres;
mod server;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentauth_jose::Algorithm;
use agentauth_store::prelude::*;
use anyhow::{Context, bail};
use serde_json::json;

use crate::load::{Outcome, Request, Shape};
use crate::server::Server;

/// The server's share of the machine: all of it (the load generator runs
/// beside it on the same cores).
const SERVER_CORES: usize = 2;
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The DPoP case, and the case it is compared with.
const DPOP_CASE: &str = "client_credentials ES256 jwt + DPoP proof";
const UNBOUND_CASE: &str = "client_credentials ES256 jwt";
/// One realm per signing algorithm.
const REALMS: [(&str, Algorithm); 3] =
    [("rs256", Algorithm::Rs256), ("es256", Algorithm::Es256), ("eddsa", Algorithm::EdDsa)];

#[derive(Debug)]
struct Options {
    server_bin: PathBuf,
    out: PathBuf,
    seconds: f64,
    connections: usize,
    tokens: u64,
    realms: Vec<usize>,
    hook_calls: usize,
    /// Run only the request cases whose name contains this, print them and
    /// write nothing: for profiling one path.
    only: Option<String>,
    /// Leave out the PostgreSQL section.
    no_postgres: bool,
    /// How long pgbench measures PostgreSQL's commit rate, seconds.
    pgbench_seconds: u32,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut options = Self {
            server_bin: root.join("target/release/agentauth"),
            out: root.join("docs/BENCHMARKS.md"),
            seconds: 5.0,
            connections: 16,
            tokens: 1_000_000,
            realms: vec![100, 1000],
            hook_calls: 2000,
            only: None,
            no_postgres: false,
            pgbench_seconds: 5,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--server-bin" => options.server_bin = value()?.into(),
                "--out" => options.out = value()?.into(),
                "--seconds" => options.seconds = value()?.parse()?,
                "--connections" => options.connections = value()?.parse()?,
                "--tokens" => options.tokens = value()?.parse()?,
                "--only" => options.only = Some(value()?),
                "--no-postgres" => options.no_postgres = true,
                "--realms" => {
                    options.realms = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
                }
                "--quick" => {
                    options.seconds = 1.0;
                    options.tokens = 20_000;
                    options.realms = vec![10, 20];
                    options.hook_calls = 200;
                    options.pgbench_seconds = 2;
                }
                "--help" | "-h" => {
                    println!(
                        "agentauth-bench [--server-bin FILE] [--out FILE] [--seconds S] [--connections C] \
                         [--tokens N] [--realms N,M] [--quick] [--only CASE] [--no-postgres]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(options)
    }

    fn selected(&self, case: &str) -> bool {
        self.only.as_ref().is_none_or(|only| case.contains(only.as_str()))
    }

    fn shape(&self) -> Shape {
        Shape {
            connections: self.connections,
            duration: Duration::from_secs_f64(self.seconds),
            max_requests: 5_000_000,
        }
    }
}

/// One row of a results table.
struct Row {
    case: String,
    outcome: Outcome,
    /// The physical limit this case is compared with.
    limit: Limit,
    /// The target: a ratio of the limit, or an absolute rate.
    target: Target,
}

/// The slowest requests a signing-bound case may have: its p99 at most
/// this many times its p50.
const TAIL_RATIO: f64 = 3.0;

#[derive(Clone, Copy)]
enum Target {
    None,
    Ratio(f64),
    Rate(f64),
}

#[derive(Clone, Copy)]
enum Limit {
    None,
    /// ring's signing rate with the realm's key of this algorithm.
    Ring(Algorithm),
    /// SQLite's rate of durable single-row commits.
    Commits,
}

/// The limits measured in this run: ring's rates before and after the
/// request cases, and SQLite's commit rate.
struct Limits {
    ring: Vec<(Algorithm, f64, f64)>,
    commits: f64,
}

impl Limits {
    fn per_second(&self, limit: Limit) -> Option<f64> {
        match limit {
            Limit::None => None,
            Limit::Ring(alg) => self.ring.iter().find(|(a, _, _)| *a == alg).map(|(_, b, a)| (b + a) / 2.0),
            Limit::Commits => Some(self.commits),
        }
    }
}

impl Row {
    fn ratio(&self, limits: &Limits) -> Option<f64> {
        limits.per_second(self.limit).map(|l| self.outcome.per_second() / l)
    }

    fn verdict(&self, limits: &Limits) -> String {
        let met = match self.target {
            Target::None => return String::new(),
            Target::Ratio(r) => self.ratio(limits).is_some_and(|x| x >= r),
            Target::Rate(r) => self.outcome.per_second() >= r,
        };
        let target = match self.target {
            Target::Ratio(r) => format!("≥ {:.0}% of limit", r * 100.0),
            Target::Rate(r) => format!("≥ {r:.0}/s"),
            Target::None => String::new(),
        };
        let verdict = |met: bool| if met && self.outcome.failed == 0 { "met" } else { "**missed**" };
        let mut text = format!("{target}: {}", verdict(met));
        // A signing-bound case also has a bound on its slowest requests.
        if let Limit::Ring(_) = self.limit {
            let (p50, p99) = (self.outcome.quantile_ms(0.5), self.outcome.quantile_ms(0.99));
            text.push_str(&format!("; p99 ≤ {TAIL_RATIO:.0}× p50: {}", verdict(p99 <= TAIL_RATIO * p50)));
        }
        text
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("agentauth-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let options = Options::parse()?;
    if !options.server_bin.exists() {
        bail!("{} is missing: cargo build --release first (make bench does)", options.server_bin.display());
    }
    let scratch_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&scratch_root)?;
    let scratch = tempfile::tempdir_in(&scratch_root).context("scratch directory")?;
    let mut report = String::new();
    let started = Instant::now();

    // ---- the server, and the limits with its own keys ----
    let data = server::data_dir(scratch.path(), "main")?;
    let server = Server::start(&options.server_bin, &data)?;
    let idle = server.memory_mib()?;
    bench_realms(&server)?;
    // Signing rates drift on a shared machine: measured before and after
    // the request cases, each ratio is to their mean.
    let measure_ring = || -> anyhow::Result<Vec<(Algorithm, f64)>> {
        eprintln!("measuring ring's signing rates with the realms' keys");
        let mut rates = Vec::new();
        for (realm, alg) in REALMS {
            let key = limits::realm_key(&data, realm)?;
            rates.push((alg, limits::signing_rate(&key, SERVER_CORES, Duration::from_secs(2))?));
        }
        Ok(rates)
    };
    let ring_before = measure_ring()?;
    let commits = limits::commit_rate(&data, Duration::from_secs(2))?;
    let mut token_rows = Vec::new();
    for case in cases(&server)? {
        if !options.selected(&case.name) {
            continue;
        }
        eprintln!("{}", case.name);
        let outcome = measure(&[server.addr], &case.request, options.shape());
        token_rows.push(Row { case: case.name, outcome, limit: case.limit, target: case.target });
    }
    let ring_after = measure_ring()?;
    let ring = ring_before.iter().zip(&ring_after).map(|((alg, before), (_, after))| (*alg, *before, *after)).collect();
    let limits = Limits { ring, commits };
    if options.only.is_some() {
        server.stop()?;
        print!("{}", requests_table(&token_rows, &limits)?);
        let postgres = postgres::run(&options, scratch.path(), &token_rows)?;
        print!("{}", postgres.report()?);
        return Ok(());
    }

    // Activation of a new plugin version (already compiled: same bytes).
    let mut activations = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        server.push("es256", "software-agent-may-act", "may-act", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT)?;
        activations.push(t.elapsed());
    }
    activations.sort_unstable();

    // Memory after a million tokens.
    let heavy = server.register("es256", "bench jwt")?;
    let tokens = Request::form(
        Server::realm_path("es256", "access_token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &heavy.client_id),
            ("client_secret", &heavy.client_secret),
        ],
    );
    eprintln!("{} tokens for the memory figure", options.tokens);
    let million = load::run(
        &[server.addr],
        &tokens,
        Shape { connections: options.connections, duration: Duration::from_secs(600), max_requests: options.tokens },
    );
    let after_tokens = server.memory_mib()?;

    // Memory with many realms, each with its own plugins, loaded.
    let mut realm_memory = Vec::new();
    let mut made = 0;
    for &count in &options.realms {
        eprintln!("{count} realms");
        while made < count {
            let realm = format!("tenant{made:04}");
            server.bench_realm(&realm, "ES256")?;
            let client = server.register(&realm, "bench jwt may-act")?;
            server.token(&realm, &client, "read")?;
            made += 1;
        }
        realm_memory.push((count, server.memory_mib()?));
    }
    server.stop()?;

    // ---- the same cases on PostgreSQL ----
    let postgres = postgres::run(&options, scratch.path(), &token_rows)?;

    // ---- hooks and cold start ----
    let polyglot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot");
    let mut components: Vec<(&'static str, Vec<u8>)> =
        vec![("Rust", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT.to_vec())];
    for (language, file) in
        [("Python", "python-software-agent-may-act.wasm"), ("JavaScript", "js-software-agent-may-act.wasm")]
    {
        match std::fs::read(polyglot.join(file)) {
            Ok(bytes) => components.push((language, bytes)),
            Err(_) => eprintln!("{language}: {file} missing (scripts/build-polyglot makes it); skipped"),
        }
    }
    eprintln!("hook calls");
    let hooks = limits::hook_costs(&components, options.hook_calls)?;
    let cold = match components.iter().find(|(l, _)| *l == "Python") {
        Some((_, python)) => Some(cold_start(&options, scratch.path(), python)?),
        None => None,
    };

    // ---- the report ----
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    writeln!(
        report,
        "Run {date}, {:.0} s, on {} cores ({cpu}), {}.",
        started.elapsed().as_secs_f64(),
        num_cores(),
        memory_total()
    )?;
    writeln!(
        report,
        "Versions: {}, {}, {}.",
        command_output(&options.server_bin.to_string_lossy(), &["--version"]),
        command_output("rustc", &["--version"]),
        locked_versions(&["wasmtime", "ring", "rusqlite", "hyper"])
    )?;
    writeln!(
        report,
        "Load: {} keep-alive connections from one client thread on the same {SERVER_CORES} cores as the server, \
         {} s per case after a 0.5 s warm-up.\n",
        options.connections, options.seconds
    )?;
    writeln!(report, "### Limits, measured in this run\n")?;
    writeln!(report, "| limit | per second |\n|---|---:|")?;
    for (alg, before, after) in &limits.ring {
        writeln!(
            report,
            "| ring {} signatures with the realm's own key, {SERVER_CORES} threads (before / after the cases) | \
             {before:.0} / {after:.0} |",
            alg.as_str()
        )?;
    }
    writeln!(
        report,
        "| SQLite durable single-row commits (WAL, synchronous=FULL), 1 writer, in the data directory | {commits:.0} |\n"
    )?;
    writeln!(report, "### Requests\n")?;
    report.push_str(&requests_table(&token_rows, &limits)?);
    let failures: Vec<String> = token_rows
        .iter()
        .filter_map(|r| r.outcome.first_failure.as_ref().map(|f| format!("{}: {f}", r.case)))
        .collect();
    for failure in &failures {
        writeln!(report, "\nFirst failure of {failure}")?;
    }
    writeln!(
        report,
        "\nThe registration row's limit is SQLite's single-commit rate: above 100% means commits are grouped.\n"
    )?;
    let rate = |case: &str| token_rows.iter().find(|r| r.case == case).map(|r| r.outcome.per_second());
    if let (Some(bound), Some(unbound)) = (rate(DPOP_CASE), rate(UNBOUND_CASE)) {
        writeln!(
            report,
            "DPoP-bound client credentials run at {:.0}% of the unbound ES256 JWT rate, measured in this run \
             (a proof's ES256 verification and its jti's durable record added to each request).\n",
            bound / unbound * 100.0
        )?;
    }
    report.push_str(&postgres.report()?);

    writeln!(report, "### Plugins\n")?;
    writeln!(
        report,
        "| may-act hook call | size MB | first compile | p50 µs | p99 µs | target |\n|---|---:|---:|---:|---:|---|"
    )?;
    for h in &hooks {
        let target = if h.language == "Rust" { 50.0 } else { 300.0 };
        let p50 = h.p50.as_secs_f64() * 1e6;
        let met = if p50 <= target { "met" } else { "**missed**" };
        writeln!(
            report,
            "| {} | {:.2} | {:.2} s | {:.1} | {:.1} | ≤ {target:.0} µs p50: {met} |",
            h.language,
            h.size_mb,
            h.compile.as_secs_f64(),
            p50,
            h.p99.as_secs_f64() * 1e6
        )?;
    }
    let q =
        |q: f64| activations[((activations.len() as f64 * q) as usize).min(activations.len() - 1)].as_secs_f64() * 1e3;
    writeln!(
        report,
        "\nActivating a new version of a plugin already compiled (upload, validate, store, swap; 20 pushes of the \
         Rust may-act policy): p50 {:.1} ms, max {:.1} ms.\n",
        q(0.5),
        q(1.0)
    )?;
    if let Some(cold) = &cold {
        writeln!(
            report,
            "First push of the Python may-act policy (compiled at upload): {:.2} s. Restart to the first token that \
             runs it: {:.2} s with its stored compiled artifact, {:.2} s after deleting the artifact (compiled \
             again).\n",
            cold.first_push.as_secs_f64(),
            cold.with_artifacts.as_secs_f64(),
            cold.without_artifacts.as_secs_f64()
        )?;
    }
    writeln!(report, "### Server memory\n")?;
    writeln!(report, "| state | RSS MiB | peak RSS MiB |\n|---|---:|---:|")?;
    writeln!(report, "| idle, after start | {:.1} | {:.1} |", idle.0, idle.1)?;
    writeln!(
        report,
        "| after the cases above and {} more ES256 tokens ({} failed) | {:.1} | {:.1} |",
        million.ok, million.failed, after_tokens.0, after_tokens.1
    )?;
    for (count, (rss, peak)) in &realm_memory {
        writeln!(
            report,
            "| with {count} more realms, each with its own 2 plugins (the same bytes), loaded | {rss:.1} | {peak:.1} |"
        )?;
    }

    print!("{report}");
    write_results(&options.out, &report)?;
    eprintln!("wrote {}", options.out.display());
    let failures: Vec<String> = failures.into_iter().chain(postgres.failures()).collect();
    if token_rows.iter().any(|r| r.outcome.failed > 0) || million.failed > 0 || !failures.is_empty() {
        bail!("some requests failed: {failures:?}");
    }
    Ok(())
}

/// One request case: what it sends over and over, and what its figure is
/// compared with.
struct Case {
    name: String,
    request: Request,
    limit: Limit,
    target: Target,
}

/// One realm per signing algorithm, set up for benchmarks, each with its
/// signing key made (by a first token).
fn bench_realms(server: &Server) -> anyhow::Result<()> {
    for (realm, alg) in REALMS {
        server.bench_realm(realm, alg.as_str())?;
        let client = server.register(realm, "bench jwt")?;
        server.token(realm, &client, "read")?;
    }
    Ok(())
}

/// The request cases, in the order of the results table, each with a
/// client of its own registered through `server` in the realms of
/// [`bench_realms`].
fn cases(server: &Server) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (realm, alg) in REALMS {
        for (format, may_act) in [("jwt", true), ("jwt", false), ("opaque", true), ("opaque", false)] {
            let name = format!("bench {format}{}", if may_act { " may-act" } else { "" });
            let client = server.register(realm, &name)?;
            let request = Request::form(
                Server::realm_path(realm, "access_token"),
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "read"),
                    ("client_id", &client.client_id),
                    ("client_secret", &client.client_secret),
                ],
            );
            let (limit, target) = match (format, alg) {
                ("jwt", Algorithm::Rs256) => (Limit::Ring(alg), Target::Ratio(0.95)),
                ("jwt", Algorithm::Es256) => (Limit::Ring(alg), Target::Rate(35_000.0)),
                ("jwt", _) => (Limit::Ring(alg), Target::Rate(17_000.0)),
                _ => (Limit::None, Target::None),
            };
            let name =
                format!("client_credentials {} {format}{}", alg.as_str(), if may_act { " + may-act" } else { "" });
            cases.push(Case { name, request, limit, target });
        }
    }

    // The same ES256 JWT, bound to the client's DPoP key (RFC 9449): an
    // ES256 proof verified, and its jti recorded, on every request.
    let client = server.register("es256", "bench jwt")?;
    let request = Request::form(
        Server::realm_path("es256", "access_token"),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ],
    );
    let key = agentauth_jose::generate_pkcs8(Algorithm::Es256)
        .and_then(|der| agentauth_jose::SigningKey::from_pkcs8(Algorithm::Es256, &der))
        .map_err(|e| anyhow::anyhow!("a DPoP key: {e}"))?;
    cases.push(Case {
        name: DPOP_CASE.into(),
        request: request.with_dpop(key, server.token_endpoint("es256")?),
        // Bound by the proof's verification and its jti's commit together:
        // compared with the unbound case below the table instead.
        limit: Limit::None,
        target: Target::None,
    });

    // Token exchange: the seed's second step, in the RS256 realm.
    let agent = server.register("rs256", "bench jwt may-act")?;
    let subject = server.token("rs256", &agent, "read")?;
    let request = Request::form(
        Server::realm_path("rs256", "access_token"),
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("scope", "read write"),
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("client_id", &agent.client_id),
            ("client_secret", &agent.client_secret),
        ],
    );
    cases.push(Case {
        name: "token exchange RS256 (+ refresh token)".into(),
        request,
        limit: Limit::Ring(Algorithm::Rs256),
        target: Target::Ratio(0.8),
    });

    // Registrations, each committed durably, with the DCR hook.
    let request =
        Request::json(Server::realm_path("es256", "aiagent/register"), &server::registration("bench jwt may-act"), 201);
    cases.push(Case {
        name: "aiagent/register + DCR hook".into(),
        request,
        limit: Limit::Commits,
        target: Target::Rate(7_000.0),
    });
    Ok(cases)
}

/// The request cases as a Markdown table, each against its limit.
fn requests_table(rows: &[Row], limits: &Limits) -> anyhow::Result<String> {
    let mut table = String::new();
    writeln!(table, "| case | per second | p50 ms | p99 ms | failed | ratio to limit | target |")?;
    writeln!(table, "|---|---:|---:|---:|---:|---:|---|")?;
    for row in rows {
        writeln!(
            table,
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            row.case,
            row.outcome.per_second(),
            row.outcome.quantile_ms(0.5),
            row.outcome.quantile_ms(0.99),
            row.outcome.failed,
            row.ratio(limits).map_or("–".to_string(), |r| format!("{:.0}%", r * 100.0)),
            row.verdict(limits)
        )?;
    }
    Ok(table)
}

/// A warm-up, then the measured run, against the servers at `addrs`.
fn measure(addrs: &[SocketAddr], request: &Request, shape: Shape) -> Outcome {
    let warm = Shape { duration: Duration::from_millis(500), ..shape };
    request.prepare(warm);
    let _ = load::run(addrs, request, warm);
    request.prepare(shape);
    load::run(addrs, request, shape)
}

struct ColdStart {
    first_push: Duration,
    with_artifacts: Duration,
    without_artifacts: Duration,
}

/// Time from starting the server to the first token whose may-act hook
/// runs the Python policy: with the compiled artifact stored, and without.
fn cold_start(options: &Options, scratch: &Path, python: &[u8]) -> anyhow::Result<ColdStart> {
    eprintln!("cold start");
    let data = server::data_dir(scratch, "cold")?;
    let server = Server::start(&options.server_bin, &data)?;
    server.admin(
        "PUT",
        "/poly",
        "application/json",
        json!({"ai_agents_enabled": true, "open_registration": true}).to_string().into(),
    )?;
    server.push("poly", "bench-dcr", "dcr", agentauth_plugins::BENCH_DCR)?;
    let t = Instant::now();
    server.push("poly", "software-agent-may-act", "may-act", python)?;
    let first_push = t.elapsed();
    server.admin("PUT", "/poly/hooks", "application/json", json!({"dcr": "bench-dcr"}).to_string().into())?;
    let client = server.register("poly", "bench jwt may-act")?;
    server.stop()?;

    let first_token = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let server = Server::start(&options.server_bin, &data)?;
        server.token("poly", &client, "read")?;
        let elapsed = t.elapsed();
        server.stop()?;
        Ok(elapsed)
    };
    let with_artifacts = first_token()?;
    let store = agentauth_store::Store::open(&data.join("agentauth.sqlite3"))?;
    store.delete_plugin_artifacts()?;
    drop(store);
    let without_artifacts = first_token()?;
    Ok(ColdStart { first_push, with_artifacts, without_artifacts })
}

const START: &str = "<!-- results:start -->";
const END: &str = "<!-- results:end -->";

/// Replaces the text between the result markers of `out`, keeping the
/// rest (the commentary) as it is.
fn write_results(out: &Path, report: &str) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let text = match (existing.find(START), existing.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{START}\n{report}{}", &existing[..a], &existing[b..]),
        _ => format!("# Benchmarks\n\n{START}\n{report}{END}\n"),
    };
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map_or_else(String::new, |kib| format!("{:.0} GiB RAM", kib / 1024.0 / 1024.0))
}

/// `name version` of each crate, from Cargo.lock.
fn locked_versions(names: &[&str]) -> String {
    let lock =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")).unwrap_or_default();
    names
        .iter()
        .filter_map(|name| {
            let at = lock.find(&format!("name = \"{name}\"\nversion = \""))?;
            let rest = &lock[at..];
            let version = rest.lines().nth(1)?.trim_start_matches("version = \"").trim_end_matches('"');
            Some(format!("{name} {version}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
