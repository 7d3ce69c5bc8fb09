//! A throwaway PostgreSQL cluster for tests: `initdb` into a fresh
//! temporary directory, a server on a free port of 127.0.0.1 that trusts
//! every local connection, and a fresh database per test.
//!
//! The binaries are PostgreSQL's own: `$AGENTAUTH_PG_BINDIR`, else
//! `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so when the tests do, the directory
//! is handed to the `postgres` user and the server runs as that user
//! (`runuser`). The server keeps `fsync` on: tests measure durability too.
//!
//! Dropping the [`Cluster`] stops the server and removes the directory. A
//! test process that dies without dropping it (killed, or holding it in a
//! `static`) leaves a watchdog behind: a shell loop that stops the server
//! and removes the directory within a second or two of the process being
//! gone.

use std::io::{Error, ErrorKind, Result};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A PostgreSQL server of its own, in a temporary directory.
#[derive(Debug)]
pub struct Cluster {
    /// The temporary directory: the data directory, the socket, the log.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the binaries as the `postgres` user (the tests run as root).
    as_postgres: bool,
    watchdog: Mutex<Option<Child>>,
}

impl Cluster {
    /// Makes a cluster and starts its server; returns once it accepts
    /// connections.
    pub fn start() -> Result<Self> {
        let bin = bindir()?;
        let as_postgres = running_as_root();
        let dir = fresh_dir()?;
        let mut cluster = Self { dir, bin, port: 0, as_postgres, watchdog: Mutex::new(None) };
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&cluster.dir), "chown the cluster's directory")?;
        }
        cluster.watch()?;
        cluster.initdb()?;
        // A port found free may be taken before the server binds it: try
        // a few.
        let mut failure = None;
        for _ in 0..3 {
            cluster.port = free_port()?;
            match cluster.start_again() {
                Ok(()) => return Ok(cluster),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| Error::other("the server did not start")))
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`, as superuser `postgres` (no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// Creates the database `name` (letters, digits and `_`) and returns
    /// its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::new(ErrorKind::InvalidInput, format!("not a plain database name: {name:?}")));
        }
        self.query("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// Runs `sql` as the superuser in database `db`; what it printed, one
    /// line per row, columns separated by `|`.
    pub fn query(&self, db: &str, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let mut command = Command::new(self.bin.join("psql"));
        command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port]);
        command.args(["-U", "postgres", "-d", db, "-c", sql]);
        let output = run(&mut command, "psql")?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Stops the server (a fast shutdown: sessions are ended), keeping its
    /// data, as an outage would.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]).map(drop)
    }

    /// Starts the stopped server again, on the same port; returns once it
    /// accepts connections.
    pub fn start_again(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&["start", "-w", "-t", "30", "-l", &log, "-o", &options]).map(drop).map_err(|e| {
            let tail = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            Error::new(e.kind(), format!("{e}\nserver log:\n{}", tail.join("\n")))
        })
    }

    /// Freezes the server (SIGSTOP to it and its backends): it keeps its
    /// sockets open and answers nothing, as a host that hangs or a
    /// network that drops packets would. [`Cluster::thaw`] undoes it.
    pub fn freeze(&self) -> Result<()> {
        self.signal_all("STOP")
    }

    /// Lets a frozen server run again.
    pub fn thaw(&self) -> Result<()> {
        self.signal_all("CONT")
    }

    /// Sends `signal` to the postmaster and every process it started.
    fn signal_all(&self, signal: &str) -> Result<()> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))?;
        let pid = pid.lines().next().unwrap_or_default().trim().to_string();
        // Children first, so none is started unseen by a frozen parent.
        let _ = Command::new("pkill").args([&format!("-{signal}"), "-P", &pid]).status()?;
        run(Command::new("kill").args([&format!("-{signal}"), &pid]), "kill").map(drop)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn initdb(&self) -> Result<()> {
        let data = self.data();
        let mut command = self.command("initdb");
        command.arg("-D").arg(&data);
        command.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]);
        run(&mut command, "initdb").map(drop)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        run(&mut command, "pg_ctl")
    }

    /// The directory of PostgreSQL's binaries this cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bin
    }

    /// One of PostgreSQL's binaries (`pgbench`, `psql`, ...), as the user
    /// that may run it: the `postgres` user when this process is root.
    pub fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts the watchdog: in a process group of its own, so that the
    /// signal that ends the test run (Ctrl-C goes to the whole group) does
    /// not end it too.
    fn watch(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let pg_ctl = quote(&self.bin.join("pg_ctl"));
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {pg_ctl} -D {} stop -m immediate", quote(&self.data()))
        } else {
            format!("{pg_ctl} -D {} stop -m immediate", quote(&self.data()))
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = quote(&self.dir),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        *self.watchdog.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where PostgreSQL's binaries are.
fn bindir() -> Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("AGENTAUTH_PG_BINDIR").map(PathBuf::from) {
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(Error::new(ErrorKind::NotFound, format!("no initdb in AGENTAUTH_PG_BINDIR ({})", dir.display())))
        };
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    installed.sort();
    installed.pop().map(|(_, dir)| dir).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed: install the \
             `postgresql` package, or set AGENTAUTH_PG_BINDIR to their directory",
        )
    })
}

/// Whether this process runs as root: its effective uid, from
/// `/proc/self/status` (no libc needed).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_string();
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A new, empty directory under the system's temporary directory.
fn fresh_dir() -> Result<PathBuf> {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "agentauth-pg-{}-{}-{nanos}",
        std::process::id(),
        MADE.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// A TCP port of 127.0.0.1 free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Runs `command` to its end; an error, with what it printed, unless it
/// succeeded.
fn run(command: &mut Command, what: &str) -> Result<Output> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::other(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// `path` as one word of a shell command.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}
