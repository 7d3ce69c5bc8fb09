//! The conformance suite every storage backend runs, against the SQLite
//! store twice: in memory (one connection for reads and writes), and in a
//! file, where reads use their own connections and see only what has
//! committed.

use agentauth_store::Store;

fn in_memory(test: impl FnOnce(&Store)) {
    test(&Store::open_in_memory().expect("an in-memory store"));
}

fn in_a_file(test: impl FnOnce(&Store)) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    test(&Store::open(&dir.path().join("agentauth.sqlite3")).expect("a store in a file"));
}

mod memory {
    agentauth_store_conformance::store_conformance_tests!(super::in_memory);
}

mod file {
    agentauth_store_conformance::store_conformance_tests!(super::in_a_file);
}
