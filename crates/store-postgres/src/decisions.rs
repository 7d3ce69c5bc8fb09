//! The audit of decisions: tokens issued or refused, registrations, with
//! the plugins that decided. A batch is one statement (arrays unnested),
//! so recording costs one round trip however many decisions it holds; a
//! realm's decisions go with it (by cascade) and by age.

use agentauth_core::ports::{Decision, DecisionQuery, DecisionRepository, Error, ErrorKind, PluginUse, Result};
use serde_json::{Value, json};

use crate::PgStore;
use crate::db::{conn, execute, get, query, transaction};

impl DecisionRepository for PgStore {
    fn record_decisions(&self, decisions: &[(String, Decision)]) -> Result<usize> {
        if decisions.is_empty() {
            return Ok(0);
        }
        let columns = Columns::of(decisions)?;
        let pool = self.db.pool.clone();
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let c = &columns;
                let n = execute(
                    &tx,
                    "INSERT INTO decisions (realm, at, request_id, event, client_id, grant_type, subject, actors, scope,
                                            audience, token_kind, jti, plugins, outcome, error)
                     SELECT u.realm, u.at, u.request_id, u.event, u.client_id, u.grant_type, u.subject,
                            u.actors::jsonb, u.scope, u.audience::jsonb, u.token_kind, u.jti, u.plugins::jsonb,
                            u.outcome, u.error
                     FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                                 $13::text[], $14::text[], $15::text[])
                          WITH ORDINALITY AS u(realm, at, request_id, event, client_id, grant_type, subject, actors,
                                               scope, audience, token_kind, jti, plugins, outcome, error, n)
                     JOIN realms r ON r.name = u.realm
                     ORDER BY u.n",
                    &[
                        &c.realm,
                        &c.at,
                        &c.request_id,
                        &c.event,
                        &c.client_id,
                        &c.grant,
                        &c.subject,
                        &c.actors,
                        &c.scope,
                        &c.audience,
                        &c.token_kind,
                        &c.jti,
                        &c.plugins,
                        &c.outcome,
                        &c.error,
                    ],
                )
                .await?;
                usize::try_from(n).unwrap_or(usize::MAX)
            })
        })
    }

    fn decisions(&self, realm: &str, q: &DecisionQuery) -> Result<Vec<(i64, Decision)>> {
        let (pool, realm, q) = (self.db.pool.clone(), realm.to_owned(), q.clone());
        // A version is looked for only with its plugin: containment of
        // `[{"name": .., "version": ..}]`.
        let plugin = q.plugin.as_ref().map(|name| match q.version {
            Some(version) => json!([{"name": name, "version": version}]).to_string(),
            None => json!([{"name": name}]).to_string(),
        });
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT id, at, request_id, event, client_id, grant_type, subject, actors::text, scope,
                        audience::text, token_kind, jti, plugins::text, outcome, error
                 FROM decisions
                 WHERE realm = $1 AND id > $2
                   AND ($3::text IS NULL OR client_id = $3)
                   AND ($4::text IS NULL OR outcome = $4)
                   AND ($5::bigint IS NULL OR at >= $5)
                   AND ($6::bigint IS NULL OR at < $6)
                   AND ($7::text IS NULL OR plugins @> $7::jsonb)
                 ORDER BY id LIMIT $8",
                &[&realm, &q.after, &q.client_id, &q.outcome, &q.since, &q.until, &plugin, &q.limit.max(0)],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let id: i64 = get(r, 0)?;
                    let decision = Decision {
                        at: get(r, 1)?,
                        request_id: get(r, 2)?,
                        event: get(r, 3)?,
                        client_id: get(r, 4)?,
                        grant: get(r, 5)?,
                        subject: get(r, 6)?,
                        actors: strings(id, "actors", get(r, 7)?)?,
                        scope: get(r, 8)?,
                        audience: strings(id, "audience", get(r, 9)?)?,
                        token_kind: get(r, 10)?,
                        jti: get(r, 11)?,
                        plugins: plugins(id, get(r, 12)?)?,
                        outcome: get(r, 13)?,
                        error: get(r, 14)?,
                    };
                    Ok((id, decision))
                })
                .collect()
        })
    }

    fn sweep_decisions(&self, realm: &str, before: i64) -> Result<usize> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let n = execute(&c, "DELETE FROM decisions WHERE realm = $1 AND at < $2", &[&realm, &before]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

/// A batch of decisions as the columns of one `UNNEST`.
#[derive(Default)]
struct Columns {
    realm: Vec<String>,
    at: Vec<i64>,
    request_id: Vec<String>,
    event: Vec<String>,
    client_id: Vec<Option<String>>,
    grant: Vec<Option<String>>,
    subject: Vec<Option<String>>,
    actors: Vec<String>,
    scope: Vec<Option<String>>,
    audience: Vec<String>,
    token_kind: Vec<Option<String>>,
    jti: Vec<Option<String>>,
    plugins: Vec<String>,
    outcome: Vec<String>,
    error: Vec<Option<String>>,
}

impl Columns {
    fn of(decisions: &[(String, Decision)]) -> Result<Self> {
        let encode = |v: Value| {
            serde_json::to_string(&v).map_err(|e| Error::new(ErrorKind::Other, "encoding a decision").with_source(e))
        };
        let mut c = Self::default();
        for (realm, d) in decisions {
            c.realm.push(realm.clone());
            c.at.push(d.at);
            c.request_id.push(d.request_id.clone());
            c.event.push(d.event.clone());
            c.client_id.push(d.client_id.clone());
            c.grant.push(d.grant.clone());
            c.subject.push(d.subject.clone());
            c.actors.push(encode(json!(d.actors))?);
            c.scope.push(d.scope.clone());
            c.audience.push(encode(json!(d.audience))?);
            c.token_kind.push(d.token_kind.clone());
            c.jti.push(d.jti.clone());
            let plugins: Vec<Value> = d
                .plugins
                .iter()
                .map(|p| json!({"name": p.name, "version": p.version, "sha256": p.sha256, "outcome": p.outcome}))
                .collect();
            c.plugins.push(encode(Value::Array(plugins))?);
            c.outcome.push(d.outcome.clone());
            c.error.push(d.error.clone());
        }
        Ok(c)
    }
}

fn corrupt(id: i64, what: &str) -> Error {
    Error::new(ErrorKind::Corrupt, format!("decision {id}: {what} is not what was stored"))
}

/// A stored JSON list of strings.
fn strings(id: i64, what: &str, json: String) -> Result<Vec<String>> {
    serde_json::from_str(&json).map_err(|e| Error::corrupt(format!("decision {id}: {what} is not a JSON list"), e))
}

/// The stored plugins of a decision.
fn plugins(id: i64, json: String) -> Result<Vec<PluginUse>> {
    let list: Vec<Value> =
        serde_json::from_str(&json).map_err(|e| Error::corrupt(format!("decision {id}: plugins are not JSON"), e))?;
    list.iter()
        .map(|p| {
            Ok(PluginUse {
                name: p["name"].as_str().ok_or_else(|| corrupt(id, "a plugin's name"))?.to_string(),
                version: p["version"].as_i64().ok_or_else(|| corrupt(id, "a plugin's version"))?,
                sha256: p["sha256"].as_str().ok_or_else(|| corrupt(id, "a plugin's sha256"))?.to_string(),
                outcome: p["outcome"].as_str().ok_or_else(|| corrupt(id, "a plugin's outcome"))?.to_string(),
            })
        })
        .collect()
}
