//! SQLite's failures in the terms of the storage ports: each
//! `rusqlite::Error` becomes an [`Error`] of the kind it is, with SQLite's
//! own error beneath it as its source.
//!
//! The error type itself is core's (`agentauth_core::ports::Error`), so
//! that callers decide by kind whatever the backend.

use agentauth_core::ports::{Error, ErrorKind};

/// The storage error for a SQLite failure. SQLite's own text names tables
/// and columns, never the values bound to a statement, so it is kept in
/// the message.
pub(crate) fn sqlite(e: rusqlite::Error) -> Error {
    let kind = sqlite_kind(&e);
    Error::new(kind, format!("{kind}: {e}")).with_source(e)
}

/// The kind of a SQLite failure.
fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Busy,
            C::ConstraintViolation => ErrorKind::Constraint,
            C::DatabaseCorrupt | C::NotADatabase => ErrorKind::Corrupt,
            C::SystemIoFailure | C::CannotOpen | C::DiskFull | C::PermissionDenied | C::ReadOnly => ErrorKind::Io,
            _ => ErrorKind::Other,
        },
        // A stored value of a type or range the row's reader cannot take,
        // or a name no variant has (see `stored.rs`).
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => ErrorKind::Corrupt,
        _ => ErrorKind::Other,
    }
}

/// `?` for SQLite results: `conn.execute(..).sql()?`.
pub(crate) trait SqlResult<T> {
    fn sql(self) -> Result<T, Error>;
}

impl<T> SqlResult<T> for rusqlite::Result<T> {
    fn sql(self) -> Result<T, Error> {
        self.map_err(sqlite)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn sqlite_failures_are_sorted_by_kind_and_keep_their_cause() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('a');").unwrap();
        let e = conn.execute("INSERT INTO t VALUES ('a')", []).sql().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint);
        assert!(!e.is_busy());
        assert!(e.to_string().starts_with("storage: constraint violated: "), "{e}");
        assert!(e.source().and_then(|s| s.downcast_ref::<rusqlite::Error>()).is_some());
        let e = conn.query_row("SELECT k FROM t", [], |r| r.get::<_, i64>(0)).sql().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
}
