//! Fetching JSON documents from URLs that others choose, without letting
//! them aim the server at anything but the public internet.
//!
//! This first part holds the rule every fetch will apply to the addresses
//! it is about to connect to: [`is_public`], and [`is_loopback`] for
//! development.

mod address;

pub use address::{is_loopback, is_public};
