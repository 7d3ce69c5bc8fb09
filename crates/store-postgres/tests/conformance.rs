//! The conformance suite every storage backend runs, against PostgreSQL:
//! one throwaway cluster for this test binary, a fresh database for each
//! test.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_store_postgres::throwaway::Cluster;
use agentauth_store_postgres::{Options, PgStore};

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().expect("a throwaway PostgreSQL cluster"))
}

fn with_store(test: impl FnOnce(&PgStore)) {
    static DATABASES: AtomicUsize = AtomicUsize::new(0);
    let name = format!("t_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    let url = cluster().create_database(&name).expect("a fresh database");
    test(&PgStore::connect(&url, Options::default()).expect("a store"));
}

agentauth_store_conformance::store_conformance_tests!(with_store);
