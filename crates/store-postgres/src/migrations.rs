//! Numbered schema migrations, applied in order at connect, each recorded
//! in `schema_migrations`. A database made by a newer agentauth is refused
//! rather than misread.
//!
//! Replicas starting at once against a fresh database all migrate: the
//! whole run is one transaction that first takes an advisory lock, so one
//! applies the migrations and the others, let in after its commit, find
//! nothing left to do.

use agentauth_core::ports::{Error, ErrorKind, Result};
use tokio_postgres::Client;

use crate::error::PgResult;

/// The advisory lock migrations hold (transaction-scoped), in the one-key
/// space: "agentau" in ASCII, then 1.
pub(crate) const MIGRATION_LOCK: i64 = 0x6167_656e_7461_7501;

/// Each entry moves the schema from version `i` to `i + 1`.
///
/// The tables are the SQLite store's as its migrations leave them, in
/// PostgreSQL's types: every table of a realm's rows cascades from the
/// realm; the audit log outlives it, under the realm's id. Beyond SQLite's:
/// `changes` (the feed replicas follow) and `leases`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: everything, as of the SQLite store's migration 13, and the
    // coordination of replicas.
    "CREATE TABLE server_secrets (
        name  TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE realms (
        name       TEXT PRIMARY KEY,
        id         TEXT NOT NULL UNIQUE,
        settings   TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE signing_keys (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        alg        TEXT NOT NULL,
        pkcs8      BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        signs_from BIGINT NOT NULL,
        retires_at BIGINT
    );
    CREATE INDEX signing_keys_by_realm ON signing_keys (realm, created_at);
    CREATE TABLE plugins (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        version    BIGINT NOT NULL,
        hook       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        component  BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        active     BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (realm, name, version)
    );
    CREATE INDEX plugins_by_sha256 ON plugins (sha256);
    CREATE TABLE plugin_artifacts (
        component_sha256 TEXT NOT NULL,
        engine           TEXT NOT NULL,
        artifact         BYTEA NOT NULL,
        created_at       BIGINT NOT NULL,
        PRIMARY KEY (component_sha256, engine)
    );
    CREATE TABLE clients (
        realm                   TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        client_id               TEXT NOT NULL,
        metadata                TEXT NOT NULL,
        attributes              TEXT NOT NULL,
        is_ai_agent             BOOLEAN NOT NULL,
        secret_hash             BYTEA NOT NULL,
        registration_token_hash BYTEA NOT NULL,
        issued_at               BIGINT NOT NULL,
        PRIMARY KEY (realm, client_id)
    );
    -- Each realm's number of clients, kept by the statements that insert
    -- and delete clients: a registration checks the cap by updating this
    -- one row, which also serializes racing registrations.
    CREATE TABLE client_counts (
        realm TEXT PRIMARY KEY REFERENCES realms (name) ON DELETE CASCADE,
        n     BIGINT NOT NULL
    );
    CREATE TABLE tokens (
        hash       BYTEA PRIMARY KEY,
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        grant_json TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        family     TEXT,
        used_at    BIGINT,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX tokens_by_client ON tokens (realm, client_id);
    CREATE INDEX tokens_by_family ON tokens (realm, family);
    CREATE INDEX tokens_by_expiry ON tokens (expires_at);
    CREATE TABLE revoked_jwts (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        jti        TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (realm, jti)
    );
    CREATE INDEX revoked_jwts_by_expiry ON revoked_jwts (expires_at);
    CREATE TABLE client_assertions (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        client_id  TEXT NOT NULL,
        jti        TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (realm, client_id, jti)
    );
    CREATE INDEX client_assertions_by_expiry ON client_assertions (expires_at);
    CREATE TABLE realm_admins (
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        id         TEXT NOT NULL,
        name       TEXT NOT NULL,
        token_hash BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (realm, id)
    );
    CREATE TABLE token_lineage (
        realm         TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        family        TEXT NOT NULL,
        parent_jti    TEXT NOT NULL,
        parent_family TEXT,
        parent_client TEXT NOT NULL,
        expires_at    BIGINT NOT NULL,
        PRIMARY KEY (realm, family)
    );
    CREATE INDEX token_lineage_by_parent_jti ON token_lineage (realm, parent_jti);
    CREATE INDEX token_lineage_by_parent_family ON token_lineage (realm, parent_family);
    CREATE INDEX token_lineage_by_parent_client ON token_lineage (realm, parent_client);
    -- No key to realms: entries outlive their realm, under its id.
    CREATE TABLE audit (
        id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at       BIGINT NOT NULL,
        actor    TEXT NOT NULL,
        realm    TEXT NOT NULL,
        realm_id TEXT,
        action   TEXT NOT NULL,
        plugin   TEXT,
        version  BIGINT,
        sha256   TEXT,
        detail   TEXT
    );
    CREATE INDEX audit_by_realm_id ON audit (realm_id, id);
    -- The changes replicas follow, numbered in commit order (see
    -- coordination.rs); `at` is the database's clock, in epoch seconds.
    CREATE SEQUENCE changes_seq;
    CREATE TABLE changes (
        seq       BIGINT PRIMARY KEY,
        realm     TEXT NOT NULL,
        topic     TEXT NOT NULL,
        client_id TEXT,
        at        BIGINT NOT NULL
    );
    CREATE INDEX changes_by_at ON changes (at);
    CREATE TABLE leases (
        name   TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until  BIGINT NOT NULL
    );",
    // 2: the audit of decisions. The plugins that took part are a JSON
    // list, found by containment (`@>`) through a GIN index.
    "CREATE TABLE decisions (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        realm      TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        at         BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        event      TEXT NOT NULL,
        client_id  TEXT,
        grant_type TEXT,
        subject    TEXT,
        actors     JSONB NOT NULL,
        scope      TEXT,
        audience   JSONB NOT NULL,
        token_kind TEXT,
        jti        TEXT,
        plugins    JSONB NOT NULL,
        outcome    TEXT NOT NULL,
        error      TEXT
    );
    CREATE INDEX decisions_by_time ON decisions (realm, at);
    CREATE INDEX decisions_by_client ON decisions (realm, client_id, at);
    CREATE INDEX decisions_by_plugin ON decisions USING GIN (plugins jsonb_path_ops);",
    // 3: a realm's local users, as the SQLite store's migration 17 has
    // them. Usernames compare and sort bytewise (`COLLATE "C"`), as in
    // SQLite, whatever the database's locale: a locale's collation may
    // ignore punctuation, and pages of users would not match.
    "CREATE TABLE users (
        realm         TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        subject       TEXT NOT NULL,
        username      TEXT COLLATE \"C\" NOT NULL,
        display_name  TEXT,
        email         TEXT,
        password_hash TEXT NOT NULL,
        state         TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        PRIMARY KEY (realm, subject),
        UNIQUE (realm, username)
    );",
    // 4: authorization codes and consents, as the SQLite store's migration
    // 18 has them: each goes with its realm, its user and its client (by
    // cascade on each one's key); a code's redemption sets `used_at` and
    // what it issued together. Resources are a JSON list, kept as text
    // (nothing queries inside it).
    "CREATE TABLE authorization_codes (
        realm          TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        hash           BYTEA NOT NULL,
        client_id      TEXT NOT NULL,
        redirect_uri   TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        subject        TEXT NOT NULL,
        scope          TEXT NOT NULL,
        resources      TEXT NOT NULL,
        may_act        TEXT,
        auth_time      BIGINT NOT NULL,
        created_at     BIGINT NOT NULL,
        expires_at     BIGINT NOT NULL,
        used_at        BIGINT,
        family         TEXT,
        jti            TEXT,
        jti_expires_at BIGINT,
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
        granted_at BIGINT NOT NULL,
        PRIMARY KEY (realm, subject, client_id),
        FOREIGN KEY (realm, client_id) REFERENCES clients (realm, client_id) ON DELETE CASCADE,
        FOREIGN KEY (realm, subject) REFERENCES users (realm, subject) ON DELETE CASCADE
    );
    CREATE INDEX consents_by_client ON consents (realm, client_id);",
    // A client's lifecycle: active or disabled, and the second up to which
    // its tokens are dead (when it was last disabled).
    "ALTER TABLE clients
        ADD COLUMN state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
        ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;",
    // When a client expires (none for those before), and when it last
    // authenticated (its registration, for those before).
    "ALTER TABLE clients ADD COLUMN expires_at BIGINT, ADD COLUMN last_used_at BIGINT NOT NULL DEFAULT 0;
    UPDATE clients SET last_used_at = issued_at;",
    // The client's owner (its `owner` attribute), to list and count a
    // realm's clients by owner.
    "ALTER TABLE clients ADD COLUMN owner TEXT;
    UPDATE clients SET owner = attributes::jsonb ->> 'owner';
    CREATE INDEX clients_by_owner ON clients (realm, owner) WHERE owner IS NOT NULL;",
    // Who pushed each plugin version, and its language if known (none for
    // versions before).
    "ALTER TABLE plugins ADD COLUMN uploaded_by TEXT, ADD COLUMN language TEXT;",
    // How far each realm's audit is delivered to each of its event
    // receivers.
    "CREATE TABLE event_cursors (
        realm    TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
        receiver TEXT NOT NULL,
        upto     BIGINT NOT NULL,
        PRIMARY KEY (realm, receiver)
    );",
    // The DPoP key an authorization code is bound to (RFC 9449 §10).
    "ALTER TABLE authorization_codes ADD COLUMN dpop_jkt TEXT;",
];

/// The schema version this build migrates a database to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version this build knows.
pub(crate) fn known() -> i64 {
    SCHEMA_VERSION
}

/// Applies the pending migrations on `client`, in one transaction under
/// [`MIGRATION_LOCK`]; returns the version before and after.
pub(crate) async fn apply(client: &mut Client) -> Result<(i64, i64)> {
    let tx = client.transaction().await.pg()?;
    // A migration may take its time, and waiting for another replica's
    // takes as long as that does: no statement timeout here.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await.pg()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.pg()?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .pg()?;
    let row = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.pg()?;
    let before: i64 = crate::db::get(&row, 0)?;
    let known = known();
    if before > known {
        return Err(Error::new(
            ErrorKind::NewerSchema,
            format!("the database has schema version {before}, newer than this agentauth knows ({known})"),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(before).unwrap_or(0)) {
        tx.batch_execute(sql).await.pg()?;
        let version = i as i64 + 1;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at)
             VALUES ($1, floor(extract(epoch FROM clock_timestamp()))::BIGINT)",
            &[&version],
        )
        .await
        .pg()?;
    }
    tx.commit().await.pg()?;
    Ok((before, known))
}
