//! Nothing acknowledged is lost: a consistent backup of a running server
//! serves when restored, and a server killed at random moments under load
//! restarts with every acknowledged registration, refresh token and
//! signing key intact.

use std::path::Path;

use crate::support::{ADMIN_TOKEN, Agent, Server, cli, jwt_parts};

fn refresh(server: &Server, agent: &Agent, refresh_token: &str) -> crate::support::Reply {
    server.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], Some(agent))
}

#[test]
fn a_backup_taken_while_serving_restores_and_serves() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &token, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let refresh_token = exchanged.json["refresh_token"].as_str().expect("refresh_token").to_string();

    let backups = tempfile::tempdir().expect("temp dir");
    let backup = backups.path().join("agentauth.backup");
    let data = server.data_dir().to_path_buf();
    let take = ["backup", "--data-dir", data.to_str().expect("utf-8"), "--to", backup.to_str().expect("utf-8")];
    let (ok, out, err) = cli(&take, ADMIN_TOKEN);
    assert!(ok, "{out}{err}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&backup).expect("backup written").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the backup is readable by its owner only");
    // A second backup to the same file would overwrite the first: refused.
    let (ok, _, err) = cli(&take, ADMIN_TOKEN);
    assert!(!ok && err.contains("exists"), "{err}");
    // Registered after the backup: not in it.
    let later = server.register_agent();
    let master_key = std::fs::read(data.join("master.key")).expect("reading the master key");
    server.stop();

    let restored = tempfile::tempdir().expect("temp dir");
    let into = restored.path().to_str().expect("utf-8");
    let (ok, out, err) = cli(&["restore", "--from", backup.to_str().expect("utf-8"), "--data-dir", into], ADMIN_TOKEN);
    assert!(ok, "{out}{err}");
    std::fs::write(restored.path().join("master.key"), master_key).expect("writing the master key");
    let server = Server::start_with(restored.path(), &[]);
    // The client, its refresh token and the signing key came back.
    let again = server.read_token(&agent);
    assert_eq!(jwt_parts(&again).0["kid"], jwt_parts(&token).0["kid"]);
    let refreshed = refresh(&server, &agent, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let unknown = server.token(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &later.client_id),
            ("client_secret", &later.client_secret),
        ],
        None,
    );
    unknown.assert_error(401, "invalid_client");
    // Restoring over a database is refused.
    let (ok, _, err) = cli(&["restore", "--from", backup.to_str().expect("utf-8"), "--data-dir", into], ADMIN_TOKEN);
    assert!(!ok && err.contains("exists"), "{err}");
}

#[test]
fn a_backup_of_no_database_is_an_error_and_writes_nothing() {
    let empty = tempfile::tempdir().expect("temp dir");
    let to = empty.path().join("out");
    let dir = empty.path().join("none");
    let (ok, _, err) =
        cli(&["backup", "--data-dir", dir.to_str().expect("utf-8"), "--to", to.to_str().expect("utf-8")], ADMIN_TOKEN);
    assert!(!ok && err.contains("no database"), "{err}");
    assert!(!Path::new(&to).exists());
}
