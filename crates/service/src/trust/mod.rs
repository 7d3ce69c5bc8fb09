//! Trust in issuers outside the realm.

mod admin;
