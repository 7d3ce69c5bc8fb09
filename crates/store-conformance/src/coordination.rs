//! The contract of [`Coordination`]: every change a replica acts on is
//! recorded in commit order, followers read them a page at a time, and a
//! lease has one holder at a time.

use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_core::Algorithm;
use agentauth_core::ports::{CHANGES_KEPT_FOR, Change, ChangeTopic, KeyRow, NewToken, Storage, TokenKind};

use crate::fixtures::{audit, client_row, pushed};

/// The changes after `after`, as (realm, topic, client) for comparing.
fn followed<S: Storage + ?Sized>(store: &S, after: i64) -> Vec<(String, ChangeTopic, Option<String>)> {
    let changes = store.changes_after(after, 1000).unwrap();
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "changes come in order: {seqs:?}");
    assert!(seqs.iter().all(|s| *s > after), "only changes after {after}: {seqs:?}");
    changes.into_iter().map(|c| (c.realm, c.topic, c.client_id)).collect()
}

fn change(realm: &str, topic: ChangeTopic, client: Option<&str>) -> (String, ChangeTopic, Option<String>) {
    (realm.to_string(), topic, client.map(String::from))
}

pub fn every_change_a_replica_acts_on_is_recorded_in_commit_order<S: Storage + ?Sized>(store: &S) {
    let start = store.latest_change().unwrap();
    assert!(store.create_realm("alpha", "{}", &audit("create")).unwrap());
    assert!(store.set_realm_settings("alpha", r#"{"x":1}"#, &audit("settings")).unwrap());
    let key = KeyRow { alg: Algorithm::Es256, pkcs8: vec![1], created_at: 0, signs_from: 0, retires_at: None };
    store.insert_first_key("alpha", &key).unwrap();
    store.rotate_key("alpha", &key, 100, &audit("rotate")).unwrap();
    store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
    store.push_plugin("alpha", &pushed("p", "bb", b"v2"), &audit("push")).unwrap();
    assert!(store.activate_plugin("alpha", "p", 1, &audit("rollback")).unwrap());
    assert_eq!(store.delete_plugin("alpha", "p", Some(2), &audit("delete")).unwrap(), 1);
    assert!(store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap());
    let mut updated = client_row("c1");
    updated.registration_token_hash = vec![9; 32];
    assert!(store.update_client("alpha", &updated, &[2; 32]).unwrap());
    assert!(store.delete_client("alpha", "c1", &[9; 32]).unwrap());
    assert!(store.delete_realm("alpha", &audit("delete realm")).unwrap());

    use ChangeTopic::*;
    assert_eq!(
        followed(store, start),
        [
            change("alpha", Realm, None),
            change("alpha", Realm, None),
            change("alpha", Keys, None),
            change("alpha", Keys, None),
            change("alpha", Plugins, None),
            change("alpha", Plugins, None),
            change("alpha", Plugins, None),
            change("alpha", Plugins, None),
            change("alpha", Client, Some("c1")),
            change("alpha", Client, Some("c1")),
            change("alpha", Realm, None),
        ],
        "a new client needs no change (nobody holds it yet), every other write does"
    );
    assert_eq!(store.latest_change().unwrap(), store.changes_after(start, 1000).unwrap().last().unwrap().seq);
}

pub fn writes_nobody_caches_record_no_change<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let start = store.latest_change().unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    let token = NewToken {
        hash: &[5; 32],
        client_id: "c1",
        family: None,
        kind: TokenKind::Access,
        grant: "{}",
        expires_at: 10,
    };
    store.insert_tokens("alpha", &[token]).unwrap();
    store.revoke_opaque("alpha", &[5; 32], "j1").unwrap();
    store.revoke_jwt("alpha", "j2", 10).unwrap();
    // A refused update changes nothing, so records nothing.
    assert!(!store.update_client("alpha", &client_row("c1"), &[7; 32]).unwrap());
    assert!(!store.set_realm_settings("beta", "{}", &audit("settings")).unwrap());
    assert_eq!(store.changes_after(start, 1000).unwrap(), Vec::<Change>::new());
    assert_eq!(store.latest_change().unwrap(), start);
}

pub fn changes_are_read_a_page_at_a_time<S: Storage + ?Sized>(store: &S) {
    let start = store.latest_change().unwrap();
    for realm in ["a", "b", "c", "d", "e"] {
        store.create_realm(realm, "{}", &audit("create")).unwrap();
    }
    let first = store.changes_after(start, 2).unwrap();
    assert_eq!(first.iter().map(|c| c.realm.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let next = store.changes_after(first[1].seq, 2).unwrap();
    assert_eq!(next.iter().map(|c| c.realm.as_str()).collect::<Vec<_>>(), ["c", "d"]);
    let last = store.changes_after(next[1].seq, 2).unwrap();
    assert_eq!(last.iter().map(|c| c.realm.as_str()).collect::<Vec<_>>(), ["e"]);
    assert!(store.changes_after(last[0].seq, 2).unwrap().is_empty());
}

pub fn changes_are_swept_once_no_follower_can_need_them<S: Storage + ?Sized>(store: &S) {
    let start = store.latest_change().unwrap();
    store.create_realm("alpha", "{}", &audit("create")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    store.sweep(now).unwrap();
    assert_eq!(store.changes_after(start, 10).unwrap().len(), 1, "a recent change is kept");
    store.sweep(now + CHANGES_KEPT_FOR + 60).unwrap();
    assert!(store.changes_after(start, 10).unwrap().is_empty(), "an old change is swept");
}

pub fn a_lease_has_one_holder_until_it_runs_out<S: Storage + ?Sized>(store: &S) {
    assert!(store.hold_lease("schedule", "a", 100, 30).unwrap());
    assert!(!store.hold_lease("schedule", "b", 110, 30).unwrap(), "held by a until 130");
    assert!(store.hold_lease("other", "b", 110, 30).unwrap(), "leases are independent");
    assert!(store.hold_lease("schedule", "a", 120, 30).unwrap(), "a renews until 150");
    assert!(!store.hold_lease("schedule", "b", 149, 30).unwrap());
    assert!(store.hold_lease("schedule", "b", 150, 30).unwrap(), "run out: b takes it");
    assert!(!store.hold_lease("schedule", "a", 151, 30).unwrap());
}

pub fn racing_holders_agree_on_one<S: Storage + ?Sized>(store: &S) {
    let holders = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..16 {
            let holders = &holders;
            s.spawn(move || {
                if store.hold_lease("schedule", &format!("replica-{t}"), 1000, 30).unwrap() {
                    holders.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(holders.load(Ordering::SeqCst), 1);
}

pub fn a_database_that_answers_pings<S: Storage + ?Sized>(store: &S) {
    store.ping().unwrap();
}
