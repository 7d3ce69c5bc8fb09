//! The contract of [`KeyRepository`]: one first key however many callers
//! race for it, and rotations that put the new key first and schedule the
//! others out.

use agentauth_core::Algorithm;
use agentauth_core::ports::{KeyRow, Storage};

use crate::fixtures::audit;

fn key(alg: Algorithm, pkcs8: u8, created_at: i64, signs_from: i64) -> KeyRow {
    KeyRow { alg, pkcs8: vec![pkcs8], created_at, signs_from, retires_at: None }
}

pub fn the_first_key_stored_is_the_one_every_caller_gets<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let firsts: Vec<KeyRow> = std::thread::scope(|s| {
        let racing: Vec<_> = (0..8u8)
            .map(|i| s.spawn(move || store.insert_first_key("alpha", &key(Algorithm::Es256, i, 1, 1)).unwrap()))
            .collect();
        racing.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(firsts.iter().all(|k| *k == firsts[0]), "{firsts:?}");
    assert_eq!(store.keys("alpha").unwrap(), [firsts[0].clone()]);
    let later = key(Algorithm::Es256, 99, 2, 2);
    assert_eq!(store.insert_first_key("alpha", &later).unwrap(), firsts[0], "a realm with a key keeps it");
}

pub fn a_rotated_key_comes_first_and_the_keys_before_it_are_scheduled_out<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    let a = key(Algorithm::Es256, 1, 1, 1);
    store.insert_first_key("alpha", &a).unwrap();
    store.insert_first_key("beta", &a).unwrap();
    let b = key(Algorithm::EdDsa, 2, 5, 10);
    store.rotate_key("alpha", &b, 100, &audit("rotate-key")).unwrap();
    assert_eq!(store.keys("alpha").unwrap(), [b.clone(), KeyRow { retires_at: Some(100), ..a.clone() }]);
    // A second rotation schedules out the key that was signing; one
    // already retiring keeps its time.
    let c = key(Algorithm::Rs256, 3, 6, 20);
    store.rotate_key("alpha", &c, 200, &audit("rotate-key")).unwrap();
    let keys = store.keys("alpha").unwrap();
    assert_eq!(keys, [c, KeyRow { retires_at: Some(200), ..b }, KeyRow { retires_at: Some(100), ..a.clone() }]);
    assert_eq!(store.keys("beta").unwrap(), [a], "another realm's keys are its own");
    let log: Vec<String> = store.audit("alpha", 0, 10).unwrap().into_iter().map(|(_, e)| e.action).collect();
    assert_eq!(log, ["rotate-key", "rotate-key"]);
}

pub fn a_key_past_its_retirement_is_swept<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let a = key(Algorithm::Es256, 1, 1, 1);
    store.insert_first_key("alpha", &a).unwrap();
    let b = key(Algorithm::Es256, 2, 2, 2);
    store.rotate_key("alpha", &b, 50, &audit("rotate-key")).unwrap();
    store.sweep(49).unwrap();
    assert_eq!(store.keys("alpha").unwrap().len(), 2, "still published");
    store.sweep(50).unwrap();
    assert_eq!(store.keys("alpha").unwrap(), [b]);
}
