//! The PostgreSQL section: the same request cases with the server on a
//! throwaway PostgreSQL cluster (one replica, then two replicas on one
//! database behind a round-robin client), against PostgreSQL's own rate of
//! durable single-row commits (pgbench) on the same cluster, measured in
//! the same run.
//!
//! It is skipped, saying so in the results, when PostgreSQL's binaries are
//! missing, and left out with `--no-postgres`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentauth_store_postgres::throwaway::Cluster;
use anyhow::{Context, bail};

use crate::load::{self, Outcome, Request, Shape};
use crate::server::{self, Server};
use crate::{Options, Row};

/// The cases run on PostgreSQL, named as in the SQLite table: the
/// signing-bound JWT, and the three that write per request.
const CASES: [&str; 4] = [
    "client_credentials ES256 jwt",
    "client_credentials ES256 opaque",
    "token exchange RS256 (+ refresh token)",
    "aiagent/register + DCR hook",
];

/// The origin every replica of one database shares (issuers start with
/// it, so a token one replica issued verifies on the other).
const PUBLIC_URL: &str = "http://agentauth.bench.test";

/// pgbench's script: one single-row insert, in autocommit, so each
/// transaction is one durable commit. The row is the size of SQLite's
/// commit-rate row.
const COMMIT_SCRIPT: &str = "INSERT INTO commits (v) VALUES (repeat('x', 600));\n";

/// What the section found: why it did not run, or its figures.
#[derive(Debug)]
pub enum Section {
    /// Not run: why, as said in the results.
    Skipped(String),
    Ran(Box<Ran>),
}

#[derive(Debug)]
pub struct Ran {
    /// `postgres --version`.
    version: String,
    /// pgbench with one connection, then with eight.
    commits: Vec<Pgbench>,
    rows: Vec<PgRow>,
}

/// pgbench's rate on [`COMMIT_SCRIPT`] with `clients` connections, before
/// and after the cases (the disk's rate drifts on a shared machine).
#[derive(Debug)]
struct Pgbench {
    clients: usize,
    before: f64,
    after: f64,
}

impl Pgbench {
    fn mean(&self) -> f64 {
        (self.before + self.after) / 2.0
    }
}

/// One case on PostgreSQL.
#[derive(Debug)]
struct PgRow {
    case: String,
    replicas: usize,
    outcome: Outcome,
    /// The same case's rate on SQLite in this run, if it ran.
    sqlite: Option<f64>,
}

/// The targets of the PostgreSQL cases.
#[derive(Clone, Copy)]
enum PgTarget {
    None,
    /// At least this share of the same case's SQLite rate.
    OfSqlite(f64),
    /// At least this multiple of PostgreSQL's single-connection commit rate.
    OfCommits(f64),
}

impl PgRow {
    fn target(&self) -> PgTarget {
        match self.case.as_str() {
            "client_credentials ES256 jwt" if self.replicas == 1 => PgTarget::OfSqlite(0.9),
            "client_credentials ES256 opaque" | "aiagent/register + DCR hook" => PgTarget::OfCommits(1.0),
            _ => PgTarget::None,
        }
    }

    fn of_sqlite(&self) -> Option<f64> {
        self.sqlite.filter(|s| *s > 0.0).map(|s| self.outcome.per_second() / s)
    }

    fn of_commits(&self, commits: f64) -> Option<f64> {
        (commits > 0.0).then(|| self.outcome.per_second() / commits)
    }

    fn verdict(&self, commits: f64) -> String {
        let (text, met) = match self.target() {
            PgTarget::None => return String::new(),
            PgTarget::OfSqlite(r) => {
                (format!("≥ {:.0}% of SQLite", r * 100.0), self.of_sqlite().is_some_and(|x| x >= r))
            }
            PgTarget::OfCommits(r) => {
                (format!("≥ {r:.0}× PostgreSQL commits"), self.of_commits(commits).is_some_and(|x| x >= r))
            }
        };
        let verdict = if met && self.outcome.failed == 0 { "met" } else { "**missed**" };
        format!("{text}: {verdict}")
    }
}

/// Runs the section, unless told not to or PostgreSQL is missing. `sqlite`
/// is the request table of this run, for the ratios.
pub fn run(options: &Options, scratch: &Path, sqlite: &[Row]) -> anyhow::Result<Section> {
    if options.no_postgres {
        return Ok(Section::Skipped("Not run (`--no-postgres`).".into()));
    }
    let cases: Vec<&str> = CASES.into_iter().filter(|c| options.selected(c)).collect();
    if cases.is_empty() {
        return Ok(Section::Skipped("Not run: no PostgreSQL case matches `--only`.".into()));
    }
    eprintln!("starting a throwaway PostgreSQL cluster");
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("PostgreSQL: {e}; skipped");
            return Ok(Section::Skipped(format!("Skipped: PostgreSQL's binaries are missing ({e}).")));
        }
        Err(e) => return Err(e).context("starting a throwaway PostgreSQL cluster"),
    };
    let pgbench_bin = cluster.bindir().join("pgbench");
    if !pgbench_bin.is_file() {
        eprintln!("PostgreSQL: {} is missing; skipped", pgbench_bin.display());
        return Ok(Section::Skipped(format!("Skipped: pgbench is missing ({}).", pgbench_bin.display())));
    }
    let version = cluster
        .command("postgres")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    // PostgreSQL's own commit rate, before the cases.
    cluster.create_database("commit_rate")?;
    cluster.query("commit_rate", "CREATE TABLE commits (id bigserial PRIMARY KEY, v text NOT NULL)")?;
    // What the cases before left unwritten (and initdb, which does not
    // sync) would otherwise be flushed by the first commits: write it out
    // first, then let a short run settle the new cluster's WAL files.
    let _ = std::process::Command::new("sync").status();
    cluster.query("commit_rate", "CHECKPOINT")?;
    pgbench(&cluster, "commit_rate", 1, 1)?;
    let measure_commits = || -> anyhow::Result<Vec<(usize, f64)>> {
        let mut rates = Vec::new();
        for clients in [1, 8] {
            eprintln!("measuring PostgreSQL's commit rate with pgbench, {clients} connection(s)");
            rates.push((clients, pgbench(&cluster, "commit_rate", clients, options.pgbench_seconds)?));
        }
        Ok(rates)
    };
    let commits_before = measure_commits()?;

    // The cases, on one replica, then on two sharing one database: each
    // configuration on a fresh database with a master key of its own.
    let mut rows = Vec::new();
    for replicas in [1, 2] {
        let url = cluster.create_database(&format!("bench_{replicas}"))?;
        let (_, master_key) = agentauth_jose::MasterKey::generate().context("a master key")?;
        for (case, outcome) in on_replicas(options, scratch, &url, &master_key, replicas, &cases)? {
            let sqlite = sqlite.iter().find(|r| r.case == case).map(|r| r.outcome.per_second());
            rows.push(PgRow { case, replicas, outcome, sqlite });
        }
    }
    let commits_after = measure_commits()?;
    let commits = commits_before
        .iter()
        .zip(&commits_after)
        .map(|(&(clients, before), &(_, after))| Pgbench { clients, before, after })
        .collect();
    drop(cluster);
    Ok(Section::Ran(Box::new(Ran { version, commits, rows })))
}

/// Starts `count` replicas on the database at `url`, sets the realms up
/// through the first, and measures each case in `names` with the load
/// generator's connections spread over all of them.
fn on_replicas(
    options: &Options,
    scratch: &Path,
    url: &str,
    master_key: &str,
    count: usize,
    names: &[&str],
) -> anyhow::Result<Vec<(String, Outcome)>> {
    let mut servers = Vec::new();
    for i in 0..count {
        let dir = server::data_dir(scratch, &format!("pg-{count}-{i}"))?;
        servers.push(Server::start_replica(&options.server_bin, &dir, url, master_key, PUBLIC_URL)?);
    }
    let first = servers.first().context("no replica")?;
    crate::bench_realms(first)?;
    let cases = crate::cases(first)?;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let mut results = Vec::new();
    for case in cases.into_iter().filter(|c| names.contains(&c.name.as_str())) {
        // The other replicas learn of the setup from the database: each
        // answers the case once before it is measured.
        for other in servers.iter().skip(1) {
            let started = Instant::now();
            match first_answer(other.addr, &case.request, Duration::from_secs(10)) {
                None => eprintln!("another replica answered {} after {:?}", case.name, started.elapsed()),
                Some(failure) => eprintln!("another replica does not answer {} yet: {failure}", case.name),
            }
        }
        eprintln!("{} on PostgreSQL, {count} replica(s)", case.name);
        let outcome = crate::measure(&addrs, &case.request, options.shape());
        results.push((case.name, outcome));
    }
    for server in servers {
        server.stop()?;
    }
    Ok(results)
}

/// Sends `request` to `addr` until it is answered as expected, for at most
/// `limit`: the last failure if it never was.
fn first_answer(addr: SocketAddr, request: &Request, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let once = Shape { connections: 1, duration: limit, max_requests: 1 };
        request.prepare(once);
        let outcome = load::run(&[addr], request, once);
        if outcome.ok == 1 {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(outcome.first_failure.unwrap_or_else(|| "no answer".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs pgbench on [`COMMIT_SCRIPT`] with `clients` connections (one
/// thread) for `seconds`; its transactions per second.
fn pgbench(cluster: &Cluster, db: &str, clients: usize, seconds: u32) -> anyhow::Result<f64> {
    let mut command = cluster.command("pgbench");
    command.args(["-n", "-c", &clients.to_string(), "-j", "1", "-T", &seconds.to_string()]);
    // The script on standard input: the `postgres` user reads no file of ours.
    command.args(["-f", "-", "-h", "127.0.0.1", "-p", &cluster.port().to_string(), "-U", "postgres", db]);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pgbench")?;
    child.stdin.take().context("pgbench's standard input")?.write_all(COMMIT_SCRIPT.as_bytes())?;
    let output = child.wait_with_output().context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed ({}): {stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    match parse_tps(&stdout) {
        Some(tps) if tps.is_finite() && tps > 0.0 => Ok(tps),
        _ => bail!("no transaction rate in pgbench's output:\n{stdout}"),
    }
}

/// The transactions per second in pgbench's report: its `tps = N
/// (without initial connection time)` line (PostgreSQL 14 on) or `tps = N
/// (excluding connections establishing)` (before 14), else the first
/// `tps = N` line.
fn parse_tps(output: &str) -> Option<f64> {
    let rates: Vec<(&str, f64)> = output
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("tps")?.trim_start().strip_prefix('=')?.trim_start();
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let rate = rest[..end].parse::<f64>().ok()?;
            Some((&rest[end..], rate))
        })
        .collect();
    rates
        .iter()
        .find(|(note, _)| note.contains("without initial connection") || note.contains("excluding"))
        .or_else(|| rates.first())
        .map(|(_, rate)| *rate)
}

impl Section {
    /// The section of the results, a heading and what follows it.
    pub fn report(&self) -> anyhow::Result<String> {
        let mut report = String::new();
        writeln!(report, "### PostgreSQL\n")?;
        let ran = match self {
            Section::Skipped(why) => {
                writeln!(report, "{why}\n")?;
                return Ok(report);
            }
            Section::Ran(ran) => ran,
        };
        writeln!(
            report,
            "{}, a throwaway cluster (initdb; fsync and synchronous_commit on, other settings default) under {}, \
             on 127.0.0.1. Each replica is `agentauth serve --database` on a fresh database of the cluster, with a shared \
             master key and public URL and 16 database connections (the default); with two, the load generator's \
             connections alternate between them, and the realms are set up through the first.\n",
            if ran.version.is_empty() { "PostgreSQL" } else { ran.version.as_str() },
            std::env::temp_dir().display()
        )?;
        writeln!(report, "| limit | per second |\n|---|---:|")?;
        for run in &ran.commits {
            let what = if run.clients == 1 {
                "PostgreSQL durable single-row commits (pgbench, one autocommit INSERT per transaction), \
                 1 connection"
                    .to_string()
            } else {
                format!("the same, {} connections (for reference)", run.clients)
            };
            writeln!(report, "| {what} (before / after the cases) | {:.0} / {:.0} |", run.before, run.after)?;
        }
        // Ratios are to the mean of before and after, as ring's are.
        let commits = ran.commits.iter().find(|c| c.clients == 1).map_or(0.0, Pgbench::mean);
        writeln!(report)?;
        writeln!(
            report,
            "| case | replicas | per second | p50 ms | p99 ms | failed | ratio to SQLite | ratio to PostgreSQL \
             commits | target |"
        )?;
        writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
        let percent = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{:.0}%", r * 100.0));
        for row in &ran.rows {
            writeln!(
                report,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
                row.case,
                row.replicas,
                row.outcome.per_second(),
                row.outcome.quantile_ms(0.5),
                row.outcome.quantile_ms(0.99),
                row.outcome.failed,
                percent(row.of_sqlite()),
                percent(row.of_commits(commits)),
                row.verdict(commits)
            )?;
        }
        for row in &ran.rows {
            if let Some(failure) = &row.outcome.first_failure {
                writeln!(report, "\nFirst failure of {} on {} replica(s): {failure}", row.case, row.replicas)?;
            }
        }
        writeln!(
            report,
            "\nWhat limits these figures: the replicas, PostgreSQL and the load generator share the same \
             {} cores, so a second replica adds no CPU (its figures show what sharing one database costs, not \
             how replicas scale), and every figure is a lower bound on what a server with cores of its own \
             does. The ratio to PostgreSQL's commits is to its single-connection rate (the mean of before and \
             after): above 100% means concurrent requests' commits share WAL flushes (compare the 8-connection \
             figure).\n",
            crate::SERVER_CORES
        )?;
        Ok(report)
    }

    /// Each case's first failed request, for the run's exit status.
    pub fn failures(&self) -> Vec<String> {
        match self {
            Section::Skipped(_) => Vec::new(),
            Section::Ran(ran) => ran
                .rows
                .iter()
                .filter_map(|r| {
                    let failure = r.outcome.first_failure.as_ref()?;
                    Some(format!("{} on PostgreSQL, {} replica(s): {failure}", r.case, r.replicas))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn pgbench_rates_are_read_from_old_and_new_reports() {
        let new = "transaction type: -\nscaling factor: 1\nquery mode: simple\nnumber of clients: 1\n\
                   number of threads: 1\nmaximum number of tries: 1\nduration: 5 s\n\
                   number of transactions actually processed: 5012\nnumber of failed transactions: 0 (0.000%)\n\
                   latency average = 0.997 ms\ninitial connection time = 2.413 ms\n\
                   tps = 1002.912345 (without initial connection time)\n";
        assert_eq!(parse_tps(new), Some(1002.912345));
        let old = "number of transactions actually processed: 4000\n\
                   tps = 799.1 (including connections establishing)\n\
                   tps = 801.5 (excluding connections establishing)\n";
        assert_eq!(parse_tps(old), Some(801.5));
        let bare = "tps=42\n";
        assert_eq!(parse_tps(bare), Some(42.0));
        let with_scripts = "SQL script 1: -\n - 10 transactions (100.0% of total, tps = 2.0)\n";
        assert_eq!(parse_tps(with_scripts), None);
        assert_eq!(parse_tps("pgbench: error: connection failed\ntps = nan\n"), None);
    }
}
