//! The contract of [`ClientRepository`]: registration within the realm's
//! cap, RFC 7592 updates and deletions as compare-and-swaps on the
//! registration token's hash, and reads that follow every change.

use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_core::ApplicationType;
use agentauth_core::ports::{ClientFilter, ClientState, NewToken, Storage, TokenKind};

use crate::fixtures::{audit, client_row};

pub fn a_client_is_read_as_stored_in_its_realm_only<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    assert!(store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
    assert!(store.client_exists("alpha", "c1").unwrap());
    assert_eq!(store.client("beta", "c1").unwrap(), None);
    assert!(!store.client_exists("beta", "c1").unwrap());
    assert_eq!(store.client("alpha", "c2").unwrap(), None);
}

pub fn a_clients_application_type_and_allowed_audiences_read_back_as_stored<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let mut row = client_row("c1");
    row.client.metadata.application_type = ApplicationType::Native;
    row.client.attributes.allowed_audiences = vec!["https://a.example/mcp".into(), "calendar".into()];
    store.insert_client("alpha", &row, u64::MAX).unwrap();
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(row.clone()));
    row.client.metadata.application_type = ApplicationType::Web;
    row.client.attributes.allowed_audiences.clear();
    row.registration_token_hash = vec![9; 32];
    assert!(store.update_client("alpha", &row, &[2; 32]).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(row), "an update replaces both");
}

pub fn a_client_read_after_its_update_or_deletion_is_current<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
    let mut changed = client_row("c1");
    changed.registration_token_hash = vec![9; 32];
    changed.client.metadata.scope = "read".into();
    assert!(store.update_client("alpha", &changed, &[2; 32]).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(changed), "read after update");
    assert!(store.delete_client("alpha", "c1", &[9; 32]).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), None, "read after delete");
}

pub fn updating_a_client_keeps_its_secret<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    let mut row = client_row("c1");
    row.client.metadata.scope = "read".into();
    row.registration_token_hash = vec![9; 32];
    row.secret_hash = vec![7; 32];
    assert!(store.update_client("alpha", &row, &[2; 32]).unwrap());
    let stored = store.client("alpha", "c1").unwrap().unwrap();
    assert_eq!(stored.client.metadata.scope, "read");
    assert_eq!(stored.registration_token_hash, vec![9; 32]);
    assert_eq!(stored.secret_hash, vec![1; 32], "the secret is not changed by an update");
}

pub fn a_spent_registration_token_neither_updates_nor_deletes<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    // Racing updates that all present the current token (hash [2; 32]),
    // each rotating it to a hash of its own: exactly one wins.
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..16u8 {
            let wins = &wins;
            s.spawn(move || {
                let mut row = client_row("c1");
                row.registration_token_hash = vec![100 + t; 32];
                if store.update_client("alpha", &row, &[2; 32]).unwrap() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    let current = store.client("alpha", "c1").unwrap().unwrap().registration_token_hash;
    assert_ne!(current, vec![2; 32]);
    // The spent token deletes nothing; the current one does.
    assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    assert!(store.client("alpha", "c1").unwrap().is_some());
    assert!(store.delete_client("alpha", "c1", &current).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), None);
    assert!(!store.update_client("alpha", &client_row("c1"), &current).unwrap(), "no client, nothing to update");
}

pub fn racing_registrations_never_pass_the_realms_client_cap<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    store.insert_client("beta", &client_row("b1"), u64::MAX).unwrap();
    let stored = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..16 {
            let stored = &stored;
            s.spawn(move || {
                if store.insert_client("alpha", &client_row(&format!("c{t}")), 5).unwrap() {
                    stored.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(stored.load(Ordering::SeqCst), 5);
    assert_eq!((store.count_clients("alpha").unwrap(), store.count_clients("beta").unwrap()), (5, 1));
    // A failed insert (a taken id) counts nothing; a deletion frees a place.
    let id = (0..16).map(|t| format!("c{t}")).find(|id| store.client("alpha", id).unwrap().is_some()).unwrap();
    assert!(store.insert_client("alpha", &client_row(&id), u64::MAX).is_err());
    assert_eq!(store.count_clients("alpha").unwrap(), 5);
    assert!(store.delete_client("alpha", &id, &[2; 32]).unwrap());
    assert_eq!(store.count_clients("alpha").unwrap(), 4);
    assert!(store.insert_client("alpha", &client_row("new"), 5).unwrap());
    assert!(!store.insert_client("alpha", &client_row("newer"), 5).unwrap());
    assert_eq!(store.client("alpha", "newer").unwrap(), None, "a refused registration stores nothing");
    assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
    assert_eq!(store.count_clients("alpha").unwrap(), 0);
    assert_eq!(store.count_clients("nowhere").unwrap(), 0);
}

pub fn deleting_a_client_deletes_its_tokens_only<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
    let token = |hash, client_id| NewToken {
        hash,
        client_id,
        family: None,
        kind: TokenKind::Access,
        grant: "{}",
        expires_at: 100,
    };
    store.insert_tokens("alpha", &[token(b"t1", "c1"), token(b"t2", "c2")]).unwrap();
    assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), None);
    assert_eq!(store.token(b"t1", "alpha", TokenKind::Access, 0).unwrap(), None);
    assert!(store.token(b"t2", "alpha", TokenKind::Access, 0).unwrap().is_some());
}

pub fn disabling_a_client_ends_its_tokens_for_good_and_is_audited<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
    let token = |hash, client_id| NewToken {
        hash,
        client_id,
        family: None,
        kind: TokenKind::Access,
        grant: "{}",
        expires_at: 100,
    };
    store.insert_tokens("alpha", &[token(b"t1", "c1"), token(b"t2", "c2")]).unwrap();
    assert!(store.set_client_state("alpha", "c1", ClientState::Disabled, 40, &audit("disable-client")).unwrap());
    let disabled = store.client("alpha", "c1").unwrap().unwrap();
    assert_eq!((disabled.state, disabled.tokens_valid_after), (ClientState::Disabled, 40));
    assert!(!disabled.honours(41, 45));
    assert_eq!(store.token(b"t1", "alpha", TokenKind::Access, 0).unwrap(), None, "its server-side tokens go");
    assert!(store.token(b"t2", "alpha", TokenKind::Access, 0).unwrap().is_some(), "another's stay");
    // Enabled again, the tokens of before stay dead; later ones live.
    assert!(store.set_client_state("alpha", "c1", ClientState::Active, 50, &audit("enable-client")).unwrap());
    let enabled = store.client("alpha", "c1").unwrap().unwrap();
    assert_eq!((enabled.state, enabled.tokens_valid_after), (ClientState::Active, 40));
    assert!(!enabled.honours(40, 50) && enabled.honours(41, 50));
    // Disabling again never moves the line back.
    assert!(store.set_client_state("alpha", "c1", ClientState::Disabled, 30, &audit("disable-client")).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap().unwrap().tokens_valid_after, 40);
    assert!(!store.set_client_state("alpha", "c9", ClientState::Disabled, 60, &audit("disable-client")).unwrap());
    let actions: Vec<String> = store.audit("alpha", 0, 10).unwrap().into_iter().map(|(_, e)| e.action).collect();
    assert_eq!(actions, ["disable-client", "enable-client", "disable-client"]);
}

pub fn clients_are_listed_by_id_a_page_at_a_time_and_removed_without_their_token<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    for id in ["c3", "c1", "c2"] {
        store.insert_client("alpha", &client_row(id), u64::MAX).unwrap();
    }
    store.insert_client("beta", &client_row("c0"), u64::MAX).unwrap();
    let ids = |after: &str, limit| -> Vec<String> {
        let all = ClientFilter::default();
        store.clients("alpha", &all, after, limit).unwrap().into_iter().map(|r| r.client.client_id).collect()
    };
    assert_eq!(ids("", 2), ["c1", "c2"]);
    assert_eq!(ids("c2", 2), ["c3"]);
    assert!(store.remove_client("alpha", "c2", &audit("delete-client")).unwrap());
    assert!(!store.remove_client("alpha", "c2", &audit("delete-client")).unwrap());
    assert_eq!(ids("", 10), ["c1", "c3"]);
    assert_eq!(store.count_clients("alpha").unwrap(), 2);
    assert_eq!(store.client("alpha", "c2").unwrap(), None);
}

pub fn clients_are_filtered_by_state_kind_last_use_and_expiry<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let client = |id: &str, agent: bool, issued_at: i64, expires_at: Option<i64>| {
        let mut row = client_row(id);
        row.client.is_ai_agent = agent;
        row.client.issued_at = issued_at;
        row.expires_at = expires_at;
        // The old ones are team A's.
        row.client.attributes.owner = (issued_at < 50).then(|| "team:a".to_string());
        row
    };
    store.insert_client("alpha", &client("a-old", true, 10, None), u64::MAX).unwrap();
    store.insert_client("alpha", &client("a-new", true, 90, Some(200)), u64::MAX).unwrap();
    store.insert_client("alpha", &client("c-old", false, 10, None), u64::MAX).unwrap();
    let stored = store.client("alpha", "a-new").unwrap().unwrap();
    assert_eq!((stored.expires_at, stored.last_used_at), (Some(200), 90), "last used when registered");
    assert!(stored.is_usable(199) && !stored.is_usable(200));
    let ids = |filter: ClientFilter| -> Vec<String> {
        store.clients("alpha", &filter, "", 10).unwrap().into_iter().map(|r| r.client.client_id).collect()
    };
    let unused_since_50 = ClientFilter { unused_since: Some(50), ..ClientFilter::default() };
    assert_eq!(ids(unused_since_50.clone()), ["a-old", "c-old"]);
    assert_eq!(ids(ClientFilter { agents_only: true, ..unused_since_50.clone() }), ["a-old"]);
    // A use recorded later moves it out of the unused; an older one does
    // not move it back.
    store.touch_clients("alpha", &[("a-old".into(), 60), ("gone".into(), 60)]).unwrap();
    store.touch_clients("alpha", &[("a-old".into(), 20)]).unwrap();
    assert_eq!(store.client("alpha", "a-old").unwrap().map(|r| r.last_used_at), Some(60));
    assert_eq!(ids(unused_since_50), ["c-old"]);
    assert_eq!(ids(ClientFilter { expired_by: Some(200), ..ClientFilter::default() }), ["a-new"]);
    assert!(ids(ClientFilter { expired_by: Some(199), ..ClientFilter::default() }).is_empty());
    store.set_client_state("alpha", "c-old", ClientState::Disabled, 70, &audit("disable-client")).unwrap();
    assert_eq!(ids(ClientFilter { state: Some(ClientState::Disabled), ..ClientFilter::default() }), ["c-old"]);
    assert_eq!(ids(ClientFilter { state: Some(ClientState::Active), ..ClientFilter::default() }), ["a-new", "a-old"]);
    assert_eq!(ids(ClientFilter { disabled_before: Some(71), ..ClientFilter::default() }), ["c-old"]);
    assert!(ids(ClientFilter { disabled_before: Some(70), ..ClientFilter::default() }).is_empty());
    assert_eq!(ids(ClientFilter { client_id: Some("a-old".into()), ..ClientFilter::default() }), ["a-old"]);
    let team_a = ClientFilter { owner: Some("team:a".into()), ..ClientFilter::default() };
    assert_eq!(ids(team_a.clone()), ["a-old", "c-old"]);
    // An update that changes the owner moves the client.
    let mut moved = store.client("alpha", "a-old").unwrap().unwrap();
    moved.client.attributes.owner = Some("team:b".into());
    let token = moved.registration_token_hash.clone();
    assert!(store.update_client("alpha", &moved, &token).unwrap());
    assert_eq!(ids(team_a), ["c-old"]);
}

pub fn a_taken_client_id_is_refused<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    let mut other = client_row("c1");
    other.secret_hash = vec![3; 32];
    assert!(store.insert_client("alpha", &other, u64::MAX).is_err());
    assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")), "the first keeps the id");
    assert_eq!(store.count_clients("alpha").unwrap(), 1);
}

pub fn a_client_of_an_unknown_realm_is_refused<S: Storage + ?Sized>(store: &S) {
    assert!(store.insert_client("nowhere", &client_row("c1"), u64::MAX).is_err());
    assert_eq!(store.client("nowhere", "c1").unwrap(), None);
}
