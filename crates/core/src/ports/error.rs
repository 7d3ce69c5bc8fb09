//! The one error of every storage port, typed by what went wrong.
//!
//! Callers decide by kind, not by reading text: a busy database is worth
//! a retry (the server answers 503), a constraint violation is a refused
//! write, a corrupt row is a fault to log. The message says what happened
//! in the backend's words; the failure beneath it (the database's, the
//! file system's, the JSON parser's) stays reachable through
//! [`std::error::Error::source`], boxed, so this crate names no backend.
//! No message carries a secret: backends only ever see keyed hashes of
//! secrets, and put no stored values other than names and identifiers
//! into their messages.

use std::fmt;

/// A storage failure: its kind, what happened, and the failure beneath it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of storage failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database stayed locked by another connection (a backup, a
    /// second process) past the busy timeout: worth retrying, not a fault.
    Busy,
    /// The database cannot be reached: the connection was refused, timed
    /// out or lost. Worth retrying once it is back, not a fault.
    Unavailable,
    /// A write broke a constraint of the schema: a taken key, or a row of
    /// a realm that does not exist.
    Constraint,
    /// Something stored cannot be read: invalid JSON, a name no variant
    /// has, a value of the wrong type, or a damaged database file.
    Corrupt,
    /// The database was written by a newer version of agentauth, whose
    /// schema this one does not know.
    NewerSchema,
    /// Reading or writing a file failed: a missing file, permissions, a
    /// full disk, an I/O error.
    Io,
    /// Any other failure: of the database engine, or of the store itself.
    Other,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Busy => "database busy",
            Self::Unavailable => "database unreachable",
            Self::Constraint => "constraint violated",
            Self::Corrupt => "stored data is unreadable",
            Self::NewerSchema => "database schema is newer than this agentauth",
            Self::Io => "I/O failure",
            Self::Other => "storage failure",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl Error {
    /// An error of `kind`, saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A stored row that cannot be read: `what` names it (never its
    /// contents), `source` is why.
    pub fn corrupt(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::new(ErrorKind::Corrupt, what).with_source(source)
    }

    /// A failed file operation: `what` names the operation and the file.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, what).with_source(source)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The database stayed locked by another process past the busy
    /// timeout: worth retrying, not a fault.
    pub fn is_busy(&self) -> bool {
        self.kind == ErrorKind::Busy
    }

    /// The database is busy or cannot be reached for now: the request is
    /// worth retrying shortly (503), and nothing is wrong with the server.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Busy | ErrorKind::Unavailable)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A storage result.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_corrupt_row_names_what_it_is_and_chains_why() {
        let why = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = Error::corrupt("client alpha/c1: metadata is not valid JSON", why);
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.to_string(), "storage: client alpha/c1: metadata is not valid JSON");
        assert!(e.source().is_some_and(|s| s.is::<serde_json::Error>()));
    }

    #[test]
    fn only_a_busy_database_is_worth_a_retry() {
        assert!(Error::new(ErrorKind::Busy, "database busy").is_busy());
        assert!(!Error::new(ErrorKind::Constraint, "constraint violated").is_busy());
    }
}
