//! Numbered schema migrations, applied in order at open. A database made
//! by a newer agentauth is refused rather than misread.

use rusqlite::Connection;

use crate::error::SqlResult;
use crate::{Error, ErrorKind, Result};

/// Each entry moves the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: realms, keys, plugins, clients, server-side tokens.
    "CREATE TABLE server_secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE realms (
        name       TEXT PRIMARY KEY,
        settings   TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE signing_keys (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        alg        TEXT NOT NULL,
        pkcs8      BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX signing_keys_by_realm ON signing_keys (realm, created_at);
    CREATE TABLE plugins (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        hook       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        component  BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        active     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (realm, name, version)
    );
    CREATE TABLE clients (
        realm                   TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        client_id               TEXT NOT NULL,
        metadata                TEXT NOT NULL,
        attributes              TEXT NOT NULL,
        is_ai_agent             INTEGER NOT NULL,
        secret_hash             BLOB NOT NULL,
        registration_token_hash BLOB NOT NULL,
        issued_at               INTEGER NOT NULL,
        PRIMARY KEY (realm, client_id)
    );
    CREATE TABLE tokens (
        hash       BLOB PRIMARY KEY,
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        grant_json TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 2: the audit log of administrative changes.
    "CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        realm   TEXT NOT NULL,
        action  TEXT NOT NULL,
        plugin  TEXT,
        version INTEGER,
        sha256  TEXT,
        detail  TEXT
    );
    CREATE INDEX audit_by_realm ON audit (realm, id);",
    // 3: compiled plugins, so a restart does not compile them again.
    "CREATE TABLE plugin_artifacts (
        component_sha256 TEXT NOT NULL,
        engine           TEXT NOT NULL,
        artifact         BLOB NOT NULL,
        created_at       INTEGER NOT NULL,
        PRIMARY KEY (component_sha256, engine)
    );",
    // 4: which client a server-side token belongs to, so deleting a client
    // ends its tokens.
    "ALTER TABLE tokens ADD COLUMN client_id TEXT NOT NULL DEFAULT '';
    UPDATE tokens SET client_id = COALESCE(json_extract(grant_json, '$.client_id'), '');
    CREATE INDEX tokens_by_client ON tokens (realm, client_id);",
    // 5: token families (a refresh token and everything issued from it),
    // rotation that remembers used refresh tokens, and revoked JWTs.
    "ALTER TABLE tokens ADD COLUMN family TEXT;
    ALTER TABLE tokens ADD COLUMN used_at INTEGER;
    CREATE INDEX tokens_by_family ON tokens (realm, family);
    CREATE TABLE revoked_jwts (
        realm      TEXT NOT NULL,
        jti        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (realm, jti)
    );",
    // 6: client assertion ids seen, so each assertion is used once.
    "CREATE TABLE client_assertions (
        realm      TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        jti        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (realm, client_id, jti)
    );",
    // 7: key rotation: when a key starts signing, and when it leaves the
    // JWKS.
    "ALTER TABLE signing_keys ADD COLUMN signs_from INTEGER;
    ALTER TABLE signing_keys ADD COLUMN retires_at INTEGER;
    UPDATE signing_keys SET signs_from = created_at;",
    // 8: realm admins: credentials that manage one realm only.
    "CREATE TABLE realm_admins (
        realm      TEXT NOT NULL,
        id         TEXT NOT NULL,
        name       TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (realm, id)
    );",
    // 9: where each token family came from, so revoking a token, its
    // family or its client revokes every family derived from it.
    "CREATE TABLE token_lineage (
        realm         TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        family        TEXT NOT NULL,
        parent_jti    TEXT NOT NULL,
        parent_family TEXT,
        parent_client TEXT NOT NULL,
        expires_at    INTEGER NOT NULL,
        PRIMARY KEY (realm, family)
    );
    CREATE INDEX token_lineage_by_parent_jti ON token_lineage (realm, parent_jti);
    CREATE INDEX token_lineage_by_parent_family ON token_lineage (realm, parent_family);
    CREATE INDEX token_lineage_by_parent_client ON token_lineage (realm, parent_client);",
    // 10: each realm's number of clients, kept by triggers, so that a
    // registration checks the realm's cap in its own transaction without
    // counting rows.
    "CREATE TABLE client_counts (
        realm TEXT PRIMARY KEY,
        n     INTEGER NOT NULL
    );
    INSERT INTO client_counts (realm, n) SELECT realm, COUNT(*) FROM clients GROUP BY realm;
    CREATE TRIGGER clients_count_insert AFTER INSERT ON clients BEGIN
        INSERT INTO client_counts (realm, n) VALUES (NEW.realm, 1)
            ON CONFLICT (realm) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER clients_count_delete AFTER DELETE ON clients BEGIN
        UPDATE client_counts SET n = n - 1 WHERE realm = OLD.realm;
    END;",
    // 11: a realm's identity, apart from its name, and audit entries that
    // belong to it: a realm created under a deleted realm's name does not
    // inherit its audit log. An existing realm's entries are those after
    // the last deletion of a realm of its name; older ones belong to the
    // deleted realms and to no realm listed now.
    "ALTER TABLE realms ADD COLUMN id TEXT;
    UPDATE realms SET id = lower(hex(randomblob(16)));
    CREATE UNIQUE INDEX realms_by_id ON realms (id);
    ALTER TABLE audit ADD COLUMN realm_id TEXT;
    UPDATE audit SET realm_id = (SELECT r.id FROM realms r WHERE r.name = audit.realm)
     WHERE audit.id > COALESCE(
        (SELECT MAX(d.id) FROM audit d WHERE d.realm = audit.realm AND d.action = 'delete-realm'), 0);
    CREATE INDEX audit_by_realm_id ON audit (realm_id, id);",
    // 12: compiled artifacts live only as long as a stored version uses
    // their component: find those versions by hash, and drop the artifacts
    // that earlier versions left behind (refused uploads, deleted plugins).
    "CREATE INDEX plugins_by_sha256 ON plugins (sha256);
    DELETE FROM plugin_artifacts
     WHERE NOT EXISTS (SELECT 1 FROM plugins p WHERE p.sha256 = plugin_artifacts.component_sha256);",
    // 13: every table of a realm's rows goes with the realm (ON DELETE
    // CASCADE), so deleting a realm needs no list of tables to keep up to
    // date. Migrations 1 and 9 declared the cascade for their tables
    // (signing_keys, plugins, clients, tokens, token_lineage); the four
    // tables added later without it are rebuilt with it (SQLite cannot add
    // a foreign key to a table): new table, copy, drop, rename. Rows of
    // realms that no longer exist (client counts left at zero by earlier
    // deletions, say) are not copied, since the constraint refuses them.
    // The client count triggers name client_counts, so they are dropped
    // before it is rebuilt and made again after. The audit log keeps no
    // key to realms: its entries outlive a realm, under its id.
    "DROP TRIGGER clients_count_insert;
    DROP TRIGGER clients_count_delete;

    CREATE TABLE client_counts_new (
        realm TEXT PRIMARY KEY,
        n     INTEGER NOT NULL,
        FOREIGN KEY (realm) REFERENCES realms (name) ON DELETE CASCADE
    );
    INSERT INTO client_counts_new (realm, n)
        SELECT realm, n FROM client_counts WHERE realm IN (SELECT name FROM realms);
    DROP TABLE client_counts;
    ALTER TABLE client_counts_new RENAME TO client_counts;
    CREATE TRIGGER clients_count_insert AFTER INSERT ON clients BEGIN
        INSERT INTO client_counts (realm, n) VALUES (NEW.realm, 1)
            ON CONFLICT (realm) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER clients_count_delete AFTER DELETE ON clients BEGIN
        UPDATE client_counts SET n = n - 1 WHERE realm = OLD.realm;
    END;

    CREATE TABLE revoked_jwts_new (
        realm      TEXT NOT NULL,
        jti        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (realm, jti),
        FOREIGN KEY (realm) REFERENCES realms (name) ON DELETE CASCADE
    );
    INSERT INTO revoked_jwts_new (realm, jti, expires_at)
        SELECT realm, jti, expires_at FROM revoked_jwts WHERE realm IN (SELECT name FROM realms);
    DROP TABLE revoked_jwts;
    ALTER TABLE revoked_jwts_new RENAME TO revoked_jwts;

    CREATE TABLE client_assertions_new (
        realm      TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        jti        TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (realm, client_id, jti),
        FOREIGN KEY (realm) REFERENCES realms (name) ON DELETE CASCADE
    );
    INSERT INTO client_assertions_new (realm, client_id, jti, expires_at)
        SELECT realm, client_id, jti, expires_at FROM client_assertions WHERE realm IN (SELECT name FROM realms);
    DROP TABLE client_assertions;
    ALTER TABLE client_assertions_new RENAME TO client_assertions;

    CREATE TABLE realm_admins_new (
        realm      TEXT NOT NULL,
        id         TEXT NOT NULL,
        name       TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (realm, id),
        FOREIGN KEY (realm) REFERENCES realms (name) ON DELETE CASCADE
    );
    INSERT INTO realm_admins_new (realm, id, name, token_hash, created_at)
        SELECT realm, id, name, token_hash, created_at FROM realm_admins WHERE realm IN (SELECT name FROM realms);
    DROP TABLE realm_admins;
    ALTER TABLE realm_admins_new RENAME TO realm_admins;",
    // 14: what other processes sharing the database must act on, in commit
    // order, and leases that give one of them the cluster's schedule.
    // Changes outlive their realm: a follower must hear of its deletion.
    "CREATE TABLE changes (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        realm     TEXT NOT NULL,
        topic     TEXT NOT NULL,
        client_id TEXT,
        at        INTEGER NOT NULL
    );
    CREATE TABLE leases (
        name   TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until  INTEGER NOT NULL
    );",
    // 15: the audit of decisions (tokens, registrations), and the plugins
    // that took part in each, to find a version's decisions.
    "CREATE TABLE decisions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        at         INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        event      TEXT NOT NULL,
        client_id  TEXT,
        grant_type TEXT,
        subject    TEXT,
        actors     TEXT NOT NULL,
        scope      TEXT,
        audience   TEXT NOT NULL,
        token_kind TEXT,
        jti        TEXT,
        outcome    TEXT NOT NULL,
        error      TEXT
    );
    CREATE INDEX decisions_by_time ON decisions (realm, at);
    CREATE INDEX decisions_by_client ON decisions (realm, client_id, at);
    CREATE TABLE decision_plugins (
        decision INTEGER NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        realm    TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        plugin   TEXT NOT NULL,
        version  INTEGER NOT NULL,
        sha256   TEXT NOT NULL,
        outcome  TEXT NOT NULL,
        PRIMARY KEY (decision, position)
    );
    CREATE INDEX decision_plugins_by_version ON decision_plugins (realm, plugin, version);",
    // 16: decisions moved to a database of their own (see `DECISIONS`):
    // the rows of 15 wait under these names until the store has carried
    // them over, then go.
    "ALTER TABLE decision_plugins RENAME TO carried_decision_plugins;
    ALTER TABLE decisions RENAME TO carried_decisions;",
    // 17: a realm's local users. A username is unique in its realm (as
    // normalised by the caller, compared bytewise); a user's subject is
    // its identity in tokens, apart from the username.
    "CREATE TABLE users (
        realm         TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        subject       TEXT NOT NULL,
        username      TEXT NOT NULL,
        display_name  TEXT,
        email         TEXT,
        password_hash TEXT NOT NULL,
        state         TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (realm, subject),
        UNIQUE (realm, username)
    );",
    // 18: authorization codes, by keyed hash, and the consents users gave
    // clients. Both go with their realm, their user and their client (by
    // cascade on each one's key). A code is marked used by its one
    // redemption, which records what it issued (the refresh family, the
    // access token's jti and its expiry) in the same row: all four are set
    // together or not at all. Resources are a JSON list of strings.
    "CREATE TABLE authorization_codes (
        realm          TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        hash           BLOB NOT NULL,
        client_id      TEXT NOT NULL,
        redirect_uri   TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        subject        TEXT NOT NULL,
        scope          TEXT NOT NULL,
        resources      TEXT NOT NULL,
        may_act        TEXT,
        auth_time      INTEGER NOT NULL,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        used_at        INTEGER,
        family         TEXT,
        jti            TEXT,
        jti_expires_at INTEGER,
        PRIMARY KEY (realm, hash),
        FOREIGN KEY (realm, client_id) REFERENCES clients (realm, client_id) ON DELETE CASCADE,
        FOREIGN KEY (realm, subject) REFERENCES users (realm, subject) ON DELETE CASCADE,
        CHECK ((used_at IS NULL) = (family IS NULL)
               AND (used_at IS NULL) = (jti IS NULL)
               AND (used_at IS NULL) = (jti_expires_at IS NULL))
    );
    CREATE INDEX authorization_codes_by_client ON authorization_codes (realm, client_id);
    CREATE INDEX authorization_codes_by_subject ON authorization_codes (realm, subject);
    CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);
    CREATE TABLE consents (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        subject    TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        scope      TEXT NOT NULL,
        resources  TEXT NOT NULL,
        granted_at INTEGER NOT NULL,
        PRIMARY KEY (realm, subject, client_id),
        FOREIGN KEY (realm, client_id) REFERENCES clients (realm, client_id) ON DELETE CASCADE,
        FOREIGN KEY (realm, subject) REFERENCES users (realm, subject) ON DELETE CASCADE
    );
    CREATE INDEX consents_by_client ON consents (realm, client_id);",
    // 19: a client's lifecycle: active or disabled, and the second up to
    // which its tokens are dead (when it was last disabled).
    "ALTER TABLE clients ADD COLUMN state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled'));
    ALTER TABLE clients ADD COLUMN tokens_valid_after INTEGER NOT NULL DEFAULT 0;",
    // 20: when a client expires (none for those before), and when it last
    // authenticated (its registration, for those before).
    "ALTER TABLE clients ADD COLUMN expires_at INTEGER;
    ALTER TABLE clients ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
    UPDATE clients SET last_used_at = issued_at;",
    // 21: the client's owner (its `owner` attribute), to list and count
    // a realm's clients by owner.
    "ALTER TABLE clients ADD COLUMN owner TEXT;
    UPDATE clients SET owner = json_extract(attributes, '$.owner');
    CREATE INDEX clients_by_owner ON clients (realm, owner) WHERE owner IS NOT NULL;",
    // 22: who pushed each plugin version, and its language if known
    // (none for versions before).
    "ALTER TABLE plugins ADD COLUMN uploaded_by TEXT;
    ALTER TABLE plugins ADD COLUMN language TEXT;",
    // 23: how far each realm's audit is delivered to each of its event
    // receivers.
    "CREATE TABLE event_cursors (
        realm    TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        receiver TEXT NOT NULL,
        upto     INTEGER NOT NULL,
        PRIMARY KEY (realm, receiver)
    );",
    // 24: the DPoP key an authorization code is bound to (RFC 9449 §10).
    "ALTER TABLE authorization_codes ADD COLUMN dpop_jkt TEXT;",
];

/// The schema of the store's database.
pub(crate) const STORE: Schema = Schema { name: "the database", migrations: MIGRATIONS };

/// The schema of the audit of decisions, a database of its own beside the
/// store's: one row per token is the store's busiest write by far, and in
/// a file of its own it never holds the writer that tokens and clients
/// wait for.
///
/// A decision is its row (time, request id, token id) and its *shape*:
/// everything the decisions of one client with one grant, scope, audience,
/// plugin versions and outcome have in common. Shapes are few and rows
/// many, so a row is small and takes two short index entries.
pub(crate) const DECISIONS: Schema = Schema {
    name: "the audit of decisions",
    migrations: &[
        // 1: realms by the store's realm id, shapes, their plugins, decisions.
        "CREATE TABLE realms (
            rid INTEGER PRIMARY KEY,
            id  TEXT NOT NULL UNIQUE
        );
        CREATE TABLE shapes (
            id         INTEGER PRIMARY KEY,
            realm      INTEGER NOT NULL,
            key        BLOB NOT NULL UNIQUE,
            event      TEXT NOT NULL,
            client_id  TEXT,
            grant_type TEXT,
            subject    TEXT,
            actors     TEXT NOT NULL,
            scope      TEXT,
            audience   TEXT NOT NULL,
            token_kind TEXT,
            outcome    TEXT NOT NULL,
            error      TEXT
        );
        CREATE INDEX shapes_by_client ON shapes (realm, client_id);
        CREATE TABLE shape_plugins (
            shape    INTEGER NOT NULL,
            position INTEGER NOT NULL,
            plugin   TEXT NOT NULL,
            version  INTEGER NOT NULL,
            sha256   TEXT NOT NULL,
            outcome  TEXT NOT NULL,
            PRIMARY KEY (shape, position)
        ) WITHOUT ROWID;
        CREATE INDEX shape_plugins_by_version ON shape_plugins (plugin, version);
        CREATE TABLE decisions (
            id         INTEGER PRIMARY KEY,
            realm      INTEGER NOT NULL,
            shape      INTEGER NOT NULL,
            at         INTEGER NOT NULL,
            request_id TEXT NOT NULL,
            jti        TEXT
        );
        CREATE INDEX decisions_by_time ON decisions (realm, at);
        CREATE INDEX decisions_by_shape ON decisions (shape);
        CREATE TABLE carried (done INTEGER NOT NULL);",
    ],
};

/// A database's numbered migrations, and what to call it in errors.
#[derive(Debug)]
pub(crate) struct Schema {
    name: &'static str,
    migrations: &'static [&'static str],
}

/// The schema version this build migrates a database to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrates the database open on `conn` to the latest version of `schema`.
pub(crate) fn apply(conn: &mut Connection, schema: &Schema) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).sql()?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).sql()?;
    let known = schema.migrations.len() as i64;
    if current > known {
        return Err(Error::new(
            ErrorKind::NewerSchema,
            format!("{} has schema version {current}, newer than this agentauth knows ({known})", schema.name),
        ));
    }
    for (i, sql) in schema.migrations.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).sql()?;
        tx.pragma_update(None, "user_version", i as i64 + 1).sql()?;
    }
    tx.commit().sql()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_a_newer_schema_is_refused_as_such() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1).unwrap();
        let e = apply(&mut conn, &STORE).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NewerSchema, "{e}");
    }

    #[test]
    fn existing_audit_entries_go_to_the_realm_created_after_the_last_deletion_of_its_name() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..8] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 8).unwrap();
        tx.execute_batch(
            "INSERT INTO realms (name, settings, created_at) VALUES ('beta', '{}', 3), ('alpha', '{}', 0);
             INSERT INTO audit (at, actor, realm, action) VALUES
                (0, 'admin', 'beta', 'create-realm'), (1, 'admin', 'beta', 'push'),
                (2, 'admin', 'beta', 'delete-realm'), (3, 'admin', 'beta', 'create-realm'),
                (4, 'admin', 'alpha', 'push');
             INSERT INTO plugins (realm, name, version, hook, sha256, component, created_at)
                VALUES ('alpha', 'p', 1, 'dcr', 'kept', x'00', 0);
             INSERT INTO plugin_artifacts VALUES ('kept', 'e', x'01', 0), ('orphan', 'e', x'02', 0);",
        )
        .unwrap();
        tx.commit().unwrap();
        apply(&mut conn, &STORE).unwrap();
        let owners: Vec<(String, String, bool)> = conn
            .prepare(
                "SELECT a.realm, a.action, a.realm_id IS NOT NULL AND a.realm_id = r.id
                 FROM audit a LEFT JOIN realms r ON r.name = a.realm ORDER BY a.id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let owned: Vec<bool> = owners.iter().map(|(_, _, owned)| *owned).collect();
        assert_eq!(owned, [false, false, false, true, true], "{owners:?}");
        let artifacts: Vec<String> = conn
            .prepare("SELECT component_sha256 FROM plugin_artifacts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(artifacts, ["kept"]);
    }

    #[test]
    fn migrations_19_and_20_make_every_client_active_unexpiring_and_used_at_registration() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..18] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 18).unwrap();
        // Registered at 7, before clients had a lifecycle.
        tx.execute_batch(
            "INSERT INTO realms (name, settings, created_at, id) VALUES ('alpha', '{}', 0, 'a');
             INSERT INTO clients VALUES ('alpha', 'c1', '{}', '{}', 1, x'01', x'02', 7);",
        )
        .unwrap();
        tx.commit().unwrap();
        apply(&mut conn, &STORE).unwrap();
        let lifecycle =
            "SELECT state, tokens_valid_after, expires_at, last_used_at FROM clients WHERE client_id = 'c1'";
        let read: (String, i64, Option<i64>, i64) =
            conn.query_row(lifecycle, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
        assert_eq!(read, ("active".to_string(), 0, None, 7), "active, never expiring, last used when registered");
        assert!(conn.execute("UPDATE clients SET state = 'paused' WHERE client_id = 'c1'", []).is_err());
    }

    #[test]
    fn migration_13_keeps_each_realms_rows_drops_orphans_and_makes_them_cascade() {
        let mut conn = Connection::open_in_memory().unwrap();
        // As the store opens every connection.
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..12] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 12).unwrap();
        tx.execute_batch(
            "INSERT INTO realms (name, settings, created_at, id) VALUES ('alpha', '{}', 0, 'a'), ('beta', '{}', 0, 'b');
             INSERT INTO clients VALUES ('alpha', 'c1', '{}', '{}', 1, x'01', x'02', 0);
             INSERT INTO revoked_jwts VALUES ('alpha', 'j1', 9), ('beta', 'j2', 9), ('gone', 'j3', 9);
             INSERT INTO client_assertions VALUES ('alpha', 'c1', 'a1', 9), ('gone', 'c9', 'a9', 9);
             INSERT INTO realm_admins VALUES ('alpha', 'ad1', 'ops', x'0a', 0), ('beta', 'ad2', 'ops', x'0b', 0);
             -- What an earlier deletion of realm 'gone' left: its count at zero.
             INSERT INTO client_counts VALUES ('gone', 0);",
        )
        .unwrap();
        tx.commit().unwrap();

        apply(&mut conn, &STORE).unwrap();

        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let rows = |sql: &str| -> Vec<String> {
            conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
        };
        let kept = [
            "SELECT realm || '/' || jti FROM revoked_jwts ORDER BY 1",
            "SELECT realm || '/' || jti FROM client_assertions ORDER BY 1",
            "SELECT realm || '/' || id FROM realm_admins ORDER BY 1",
            "SELECT realm || '/' || n FROM client_counts ORDER BY 1",
        ]
        .map(rows);
        assert_eq!(
            kept,
            [vec!["alpha/j1", "beta/j2"], vec!["alpha/a1"], vec!["alpha/ad1", "beta/ad2"], vec!["alpha/1"]]
        );
        assert!(rows("PRAGMA foreign_key_check").is_empty());

        // The count triggers, made again, follow the clients.
        conn.execute(
            "INSERT INTO clients (realm, client_id, metadata, attributes, is_ai_agent, secret_hash,
                                  registration_token_hash, issued_at)
             VALUES ('beta', 'c2', '{}', '{}', 1, x'03', x'04', 0)",
            [],
        )
        .unwrap();
        assert_eq!(rows("SELECT realm || '/' || n FROM client_counts ORDER BY 1"), ["alpha/1", "beta/1"]);
        // A realm's rows now go with it; another realm's stay.
        conn.execute("DELETE FROM realms WHERE name = 'alpha'", []).unwrap();
        let left = rows(
            "SELECT realm FROM revoked_jwts UNION ALL SELECT realm FROM client_assertions
             UNION ALL SELECT realm FROM realm_admins UNION ALL SELECT realm FROM client_counts
             UNION ALL SELECT realm FROM clients",
        );
        assert_eq!(left, ["beta"; 4]);
        // A row of a realm that does not exist is refused.
        let orphan = conn.execute("INSERT INTO revoked_jwts VALUES ('nowhere', 'j', 9)", []).unwrap_err();
        assert_eq!(crate::error::sqlite(orphan).kind(), ErrorKind::Constraint);
    }
}
