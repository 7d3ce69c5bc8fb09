//! The names under which enums of the domain are stored (hook kinds,
//! signing algorithms, token kinds, user states), read back into their
//! types in one place.
//!
//! A name no variant has means the row was not written by this store (or
//! by a newer one): reading it fails as [`ErrorKind::Corrupt`], never a
//! panic and never a guess.
//!
//! [`ErrorKind::Corrupt`]: crate::ErrorKind::Corrupt

use agentauth_core::{Algorithm, HookKind};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

use crate::{TokenKind, UserState};

/// A value read from its stored name: `row.get::<_, Stored<HookKind>>(i)?.0`.
pub(crate) struct Stored<T>(pub(crate) T);

/// An enum stored by name.
pub(crate) trait Named: Sized {
    /// What the name names, for the error that a name is unknown.
    const WHAT: &'static str;

    fn from_name(name: &str) -> Option<Self>;
}

impl Named for HookKind {
    const WHAT: &'static str = "hook kind";

    fn from_name(name: &str) -> Option<Self> {
        HookKind::parse(name)
    }
}

impl Named for Algorithm {
    const WHAT: &'static str = "signing algorithm";

    fn from_name(name: &str) -> Option<Self> {
        Algorithm::parse(name)
    }
}

impl Named for TokenKind {
    const WHAT: &'static str = "token kind";

    fn from_name(name: &str) -> Option<Self> {
        TokenKind::parse(name)
    }
}

impl Named for UserState {
    const WHAT: &'static str = "user state";

    fn from_name(name: &str) -> Option<Self> {
        UserState::parse(name)
    }
}

impl<T: Named> FromSql for Stored<T> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        T::from_name(name)
            .map(Stored)
            .ok_or_else(|| FromSqlError::Other(Box::new(UnknownName { what: T::WHAT, name: name.to_string() })))
    }
}

/// A stored name no variant has.
#[derive(Debug)]
struct UnknownName {
    what: &'static str,
    name: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.name)
    }
}

impl std::error::Error for UnknownName {}
