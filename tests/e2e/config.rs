//! The config file: `serve --config FILE` takes from it every setting
//! neither a flag nor the environment gives; `config check FILE` resolves
//! a file the same way, prints the result without secrets, and names the
//! key that is wrong.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Server;

/// Runs `agentauth args` with `env` (and none of the `AGENTAUTH_`
/// variables these tests set otherwise); (success, stdout, stderr).
fn agentauth(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentauth"));
    for name in ["AGENTAUTH_LISTEN", "AGENTAUTH_WORKERS", "AGENTAUTH_LOG_FORMAT", "AGENTAUTH_CONFIG"] {
        command.env_remove(name);
    }
    let out = command.args(args).envs(env.iter().copied()).output().expect("running agentauth");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Writes `text` into `dir/name`; its path.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a config file");
    path.to_string_lossy().into_owned()
}

#[test]
fn serve_takes_listen_data_dir_public_url_workers_and_log_format_from_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = '{}'\npublic_url = \"https://auth.example.test/\"\nworkers = 2\n\
         log_format = \"json\"\n",
        data.display()
    );
    let file = write(dir.path(), "agentauth.toml", &text);
    let server = Server::start_with_config(Path::new(&file), &data, &log);

    let discovery = server.get(".well-known/openid-configuration");
    assert_eq!(discovery.status, 200, "{}", discovery.body);
    assert_eq!(discovery.json["issuer"], "https://auth.example.test/am/oauth2/realms/root/realms/alpha");
    assert!(data.join("agentauth.sqlite3").exists(), "the database is kept in the file's data_dir");
    let (ok, out, err) = agentauth(&["config", "check", "--format", "json", &file], &[]);
    assert!(ok, "{err}");
    let resolved: Value = serde_json::from_str(&out).expect("the settings as JSON");
    assert_eq!(resolved["workers"], 2, "{out}");
    server.stop();

    // Logging starts before `serve` runs, yet the file's format holds.
    let lines = std::fs::read_to_string(&log).expect("the server's log");
    assert!(lines.contains("agentauth listening on"), "{lines}");
    for line in lines.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()), "not a JSON object: {line}");
    }
}

#[test]
fn config_check_resolves_a_file_with_the_environment_and_prints_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("never-made");
    let text = format!(
        "listen = \"127.0.0.1:7001\"\nworkers = 2\nlog_format = \"json\"\ndata_dir = '{}'\n\
         database = \"postgres://agentauth:s3cret@db.internal:5432/agentauth\"\nmaster_key_file = 'master.key'\n\
         \n[metrics]\nlisten = \"127.0.0.1:9100\"\n",
        data.display()
    );
    let file = write(dir.path(), "agentauth.toml", &text);

    let (ok, out, err) = agentauth(&["config", "check", &file], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:7001\"\n") && out.contains("workers = 2\n"), "{out}");
    assert!(out.contains("database = \"postgres://db.internal:5432/agentauth\"\n"), "{out}");
    assert!(out.contains("[metrics]\nlisten = \"127.0.0.1:9100\"\n"), "{out}");
    assert!(!out.contains("s3cret") && !err.contains("s3cret"), "{out}{err}");
    assert!(!data.exists(), "config check made the data directory");

    // The environment beats the file, and a flag beats the environment.
    let env = [("AGENTAUTH_LISTEN", "127.0.0.1:7002"), ("AGENTAUTH_WORKERS", "3"), ("AGENTAUTH_LOG_FORMAT", "json")];
    let (ok, out, err) = agentauth(&["--log-format", "text", "config", "check", "--format", "json", &file], &env);
    assert!(ok, "{err}");
    let resolved: Value = serde_json::from_str(&out).expect("the settings as JSON");
    assert_eq!(resolved["listen"], "127.0.0.1:7002", "{out}");
    assert_eq!(resolved["workers"], 3, "{out}");
    assert_eq!(resolved["log_format"], "text", "{out}");
    assert_eq!(resolved["database_pool"], 16, "a default: {out}");
}

#[test]
fn a_bad_file_is_refused_by_check_and_by_serve_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, expected) in [
        ("unknown.toml", "workers = 2\nlisten_adress = \"127.0.0.1:0\"\n", "line 2: unknown field `listen_adress`"),
        ("type.toml", "workers = \"two\"\n", "line 1, `workers`: invalid type"),
        ("secret.toml", "admin_token = \"0123456789abcdef-not-here\"\n", "AGENTAUTH_ADMIN_TOKEN"),
        ("base_path.toml", "base_path = \"am\"\n", "base_path in"),
    ] {
        let file = write(dir.path(), name, text);
        let (ok, out, err) = agentauth(&["config", "check", &file], &[]);
        assert!(!ok && out.is_empty(), "{name} was accepted: {out}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");

        // `serve` refuses it the same way, before it listens.
        let data = dir.path().join("data");
        let mut serve = Command::new(env!("CARGO_BIN_EXE_agentauth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config", &file, "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting agentauth");
        let deadline = Instant::now() + Duration::from_secs(20);
        while serve.try_wait().expect("waiting for agentauth").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = serve.kill();
        let out = serve.wait_with_output().expect("agentauth's output");
        assert!(!out.status.success(), "{name}: serve started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!data.exists(), "{name}: serve made its data directory");
    }
}
