//! PostgreSQL's failures in the terms of the storage ports: each driver or
//! pool error becomes an [`Error`] of the kind it is, with the driver's own
//! error beneath it as its source.
//!
//! Messages say what failed in PostgreSQL's words (its primary message and
//! SQLSTATE, which name constraints and tables), never its DETAIL, which
//! quotes the values of a row: those stay in the source, for whoever
//! chooses to print it.

use agentauth_core::ports::{Error, ErrorKind};
use deadpool_postgres::PoolError;

/// The storage error for a failure of the driver (or of the server,
/// reported through it).
pub(crate) fn pg(e: tokio_postgres::Error) -> Error {
    let kind = kind_of(&e);
    let message = match e.as_db_error() {
        Some(db) => format!("{kind}: {} (SQLSTATE {})", db.message(), db.code().code()),
        // The driver's own words name what failed, never a value.
        None => format!("{kind}: {e}"),
    };
    Error::new(kind, message).with_source(e)
}

/// The storage error for a failure to get a pooled connection.
pub(crate) fn pool(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => {
            let e = pg(e);
            // A new connection that fails for a reason of its own (a
            // refused login, say) is still a database that cannot be used.
            if e.kind() == ErrorKind::Other {
                Error::new(ErrorKind::Unavailable, e.to_string()).with_source(e)
            } else {
                e
            }
        }
        PoolError::Timeout(_) | PoolError::Closed => {
            let message = format!("{}: no database connection within the wait timeout ({e})", ErrorKind::Unavailable);
            Error::new(ErrorKind::Unavailable, message).with_source(e)
        }
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            Error::new(ErrorKind::Other, format!("{}: connection pool: {e}", ErrorKind::Other)).with_source(e)
        }
    }
}

/// The kind of a driver failure: by SQLSTATE when the server sent one, by
/// what the driver saw otherwise.
fn kind_of(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(code) = e.code() {
        return kind_of_sqlstate(code.code());
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    let text = e.to_string();
    if e.is_closed()
        || io
        || text.starts_with("error connecting to server")
        || text.starts_with("timeout waiting for server")
        || text.starts_with("error communicating with the server")
    {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    }
}

fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // serialization_failure, deadlock_detected: after retries.
        "40001" | "40P01" => ErrorKind::Busy,
        // admin_shutdown, crash_shutdown, cannot_connect_now; a statement
        // cancelled by statement_timeout; too many connections.
        "57P01" | "57P02" | "57P03" | "57014" | "53300" => ErrorKind::Unavailable,
        // Connection exceptions.
        _ if code.starts_with("08") => ErrorKind::Unavailable,
        // Integrity constraint violations.
        _ if code.starts_with("23") => ErrorKind::Constraint,
        // data_corrupted, index_corrupted.
        "XX001" | "XX002" => ErrorKind::Corrupt,
        _ => ErrorKind::Other,
    }
}

/// `?` for driver results: `client.execute(..).await.pg()?`.
pub(crate) trait PgResult<T> {
    fn pg(self) -> Result<T, Error>;
}

impl<T> PgResult<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> Result<T, Error> {
        self.map_err(pg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_sorted_by_kind() {
        for (code, kind) in [
            ("23505", ErrorKind::Constraint),
            ("23503", ErrorKind::Constraint),
            ("40001", ErrorKind::Busy),
            ("40P01", ErrorKind::Busy),
            ("57P01", ErrorKind::Unavailable),
            ("57P03", ErrorKind::Unavailable),
            ("08006", ErrorKind::Unavailable),
            ("57014", ErrorKind::Unavailable),
            ("XX001", ErrorKind::Corrupt),
            ("42P01", ErrorKind::Other),
        ] {
            assert_eq!(kind_of_sqlstate(code), kind, "{code}");
        }
    }
}
