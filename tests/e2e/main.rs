//! End-to-end tests: the real `agentauth` binary, started on 127.0.0.1
//! with a temporary data directory, driven over HTTP as a client would.
//! One test binary, modules by endpoint; `support` makes the tests read
//! like the specification they check.

mod admin_bounds;
mod authorize;
mod browser;
mod client_metadata;
mod clients;
mod config;
mod connections;
mod console;
mod decisions;
mod dpop;
mod durability;
mod events;
mod introspection;
mod key_rotation;
mod keys_at_rest;
mod limits;
mod logs;
mod management;
mod mcp_conformance;
mod metrics;
mod owners;
mod plugins;
mod polyglot;
mod private_key_jwt;
mod realms;
mod registration;
mod replicas;
mod resources;
mod restart;
mod sandbox;
mod secrets;
mod seed_flow;
mod shutdown;
mod support;
mod token_endpoint;
mod token_exchange;
mod traces;
mod trust;
mod upstream_login;
mod users;
mod version;
