//! The contract of [`AuthorizationRepository`]: codes found by hash in
//! their realm while live and unused, redeemed exactly once (racing
//! redemptions included) with what that redemption issued answered to
//! every later one, swept once expired; consents kept per user and client
//! until revoked; both gone with their realm, their user and their client.
//!
//! [`AuthorizationRepository`]: agentauth_core::ports::AuthorizationRepository

use std::sync::Mutex;

use agentauth_core::ports::{AuthorizationCode, CodeIssue, Consent, ErrorKind, Redemption, Storage};

use crate::fixtures::{audit, authorization_code, client_row, consent, user_row};

/// Realm `realm` with clients `c1` and `c2` (whose registration tokens
/// hash to `[2; 32]`) and users `usr_1` and `usr_2`.
fn realm<S: Storage + ?Sized>(store: &S, realm: &str) {
    store.create_realm_if_absent(realm, "{}", 0).unwrap();
    for client in ["c1", "c2"] {
        assert!(store.insert_client(realm, &client_row(client), u64::MAX).unwrap());
    }
    for (subject, username) in [("usr_1", "alice"), ("usr_2", "bob")] {
        assert!(store.create_user(realm, &user_row(subject, username), &audit("create-user")).unwrap());
    }
}

/// Realms `alpha` and `beta`, each as [`realm`] makes it.
fn realms<S: Storage + ?Sized>(store: &S) {
    realm(store, "alpha");
    realm(store, "beta");
}

/// What a redemption at `at` issued: family `f-<at>`, jti `j-<at>`.
fn issue(at: i64) -> CodeIssue {
    CodeIssue { family: format!("f-{at}"), jti: format!("j-{at}"), jti_expires_at: at + 600, family_expires_at: at }
}

/// A code of `c1` for `usr_1` expiring at `expires_at`.
fn expiring(expires_at: i64) -> AuthorizationCode {
    AuthorizationCode { expires_at, ..authorization_code("c1", "usr_1") }
}

pub fn a_code_is_read_back_as_stored_in_its_realm_only_until_it_expires<S: Storage + ?Sized>(store: &S) {
    realms(store);
    let code = authorization_code("c1", "usr_1");
    store.insert_code("alpha", b"h1", &code).unwrap();
    assert_eq!(store.code("alpha", b"h1", 10).unwrap(), Some(code.clone()));
    assert_eq!(store.code("alpha", b"h1", 99).unwrap(), Some(code.clone()), "live until its expiry");
    assert_eq!(store.code("alpha", b"h1", 100).unwrap(), None, "expired");
    assert_eq!(store.code("beta", b"h1", 10).unwrap(), None, "another realm's");
    assert_eq!(store.code("alpha", b"h2", 10).unwrap(), None, "never issued");
    // Optional and empty fields are kept as given.
    let plain =
        AuthorizationCode { resources: vec![], may_act: None, dpop_jkt: None, ..authorization_code("c2", "usr_2") };
    store.insert_code("beta", b"h1", &plain).unwrap();
    assert_eq!(store.code("beta", b"h1", 10).unwrap(), Some(plain));
    assert_eq!(store.code("alpha", b"h1", 10).unwrap(), Some(code), "the same hash in two realms is two codes");
}

pub fn a_taken_hash_or_an_unknown_realm_client_or_user_is_refused<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_code("alpha", b"h1", &authorization_code("c1", "usr_1")).unwrap();
    let refused = [
        store.insert_code("alpha", b"h1", &authorization_code("c2", "usr_2")),
        store.insert_code("nowhere", b"h2", &authorization_code("c1", "usr_1")),
        store.insert_code("alpha", b"h3", &authorization_code("c9", "usr_1")),
        store.insert_code("alpha", b"h4", &authorization_code("c1", "usr_9")),
        store.save_consent("nowhere", &consent("usr_1", "c1", 0)),
        store.save_consent("alpha", &consent("usr_1", "c9", 0)),
        store.save_consent("alpha", &consent("usr_9", "c1", 0)),
    ];
    for (i, outcome) in refused.into_iter().enumerate() {
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Constraint, "refusal {i}");
    }
    assert_eq!(store.code("alpha", b"h1", 10).unwrap().map(|c| c.client_id).as_deref(), Some("c1"), "kept");
    for hash in [&b"h2"[..], b"h3", b"h4"] {
        assert_eq!(store.code("alpha", hash, 10).unwrap(), None);
    }
    assert!(store.consents("alpha", "usr_1").unwrap().is_empty());
    assert!(store.consents("alpha", "usr_9").unwrap().is_empty());
}

pub fn a_code_is_redeemed_once_and_every_later_redemption_answers_what_the_first_issued<S: Storage + ?Sized>(
    store: &S,
) {
    realms(store);
    store.insert_code("alpha", b"h1", &authorization_code("c1", "usr_1")).unwrap();
    store.insert_code("beta", b"h1", &authorization_code("c1", "usr_1")).unwrap();
    assert_eq!(store.redeem_code("alpha", b"h1", &issue(20), 20).unwrap(), Redemption::Redeemed);
    assert_eq!(store.code("alpha", b"h1", 20).unwrap(), None, "a used code is not found");
    assert_eq!(store.redeem_code("alpha", b"h1", &issue(30), 30).unwrap(), Redemption::Reused(issue(20)));
    assert_eq!(
        store.redeem_code("alpha", b"h1", &issue(40), 40).unwrap(),
        Redemption::Reused(issue(20)),
        "a reuse records nothing"
    );
    // Another realm's code of the same hash is its own.
    assert!(store.code("beta", b"h1", 20).unwrap().is_some());
    assert_eq!(store.redeem_code("beta", b"h1", &issue(50), 50).unwrap(), Redemption::Redeemed);
    assert_eq!(store.redeem_code("alpha", b"h2", &issue(20), 20).unwrap(), Redemption::Unknown, "never issued");

    // Expired unused: not redeemed, and not marked either.
    store.insert_code("alpha", b"h3", &expiring(30)).unwrap();
    assert_eq!(store.redeem_code("alpha", b"h3", &issue(30), 30).unwrap(), Redemption::Unknown);
    assert_eq!(store.redeem_code("alpha", b"h3", &issue(31), 31).unwrap(), Redemption::Unknown);
    // Used, then expired: a replay still finds what to revoke, until swept.
    assert_eq!(store.redeem_code("alpha", b"h1", &issue(100), 100).unwrap(), Redemption::Reused(issue(20)));
}

pub fn racing_redemptions_of_one_code_redeem_it_once<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_code("alpha", b"h1", &authorization_code("c1", "usr_1")).unwrap();
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let outcomes = &outcomes;
            s.spawn(move || {
                let outcome = store.redeem_code("alpha", b"h1", &issue(20 + t), 20).unwrap();
                outcomes.lock().unwrap().push((t, outcome));
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let winners: Vec<i64> = outcomes.iter().filter(|(_, o)| *o == Redemption::Redeemed).map(|(t, _)| *t).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    // Every loser was told what the winner issued.
    let first = issue(20 + winners[0]);
    for (t, outcome) in &outcomes {
        if *t != winners[0] {
            assert_eq!(*outcome, Redemption::Reused(first.clone()), "thread {t}");
        }
    }
    assert_eq!(store.redeem_code("alpha", b"h1", &issue(99), 21).unwrap(), Redemption::Reused(first));
}

pub fn a_sweep_deletes_the_codes_expired_by_then_used_or_not<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_code("alpha", b"old", &expiring(30)).unwrap();
    store.insert_code("alpha", b"used", &expiring(40)).unwrap();
    assert_eq!(store.redeem_code("alpha", b"used", &issue(20), 20).unwrap(), Redemption::Redeemed);
    store.insert_code("beta", b"now", &expiring(50)).unwrap();
    store.insert_code("alpha", b"live", &expiring(51)).unwrap();
    store.insert_code("beta", b"used-live", &expiring(60)).unwrap();
    let family_lives = CodeIssue { family_expires_at: 60, ..issue(20) };
    assert_eq!(store.redeem_code("beta", b"used-live", &family_lives, 20).unwrap(), Redemption::Redeemed);

    assert_eq!(store.sweep_codes(50).unwrap(), 3, "in every realm, up to and including 50");
    assert_eq!(store.sweep_codes(50).unwrap(), 0);
    assert_eq!(store.redeem_code("alpha", b"used", &issue(50), 50).unwrap(), Redemption::Unknown, "swept");
    assert!(store.code("alpha", b"live", 50).unwrap().is_some());
    assert_eq!(
        store.redeem_code("beta", b"used-live", &issue(50), 50).unwrap(),
        Redemption::Reused(family_lives),
        "a used code lives as long as its family"
    );
}

pub fn a_used_code_is_kept_while_its_family_lives_and_names_it_for_its_user_and_client<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_code("alpha", b"h1", &expiring(30)).unwrap();
    let long = CodeIssue { family_expires_at: 1000, ..issue(20) };
    assert_eq!(store.redeem_code("alpha", b"h1", &long, 20).unwrap(), Redemption::Redeemed);
    store.insert_code("alpha", b"h2", &expiring(30)).unwrap();
    assert!(store.code_families("alpha", "usr_1", None).unwrap() == ["f-20"], "an unused code issued nothing");
    assert_eq!(store.sweep_codes(500).unwrap(), 1, "the unused one expired; the used one lives with its family");
    assert_eq!(store.code_families("alpha", "usr_1", Some("c1")).unwrap(), ["f-20"]);
    assert!(store.code_families("alpha", "usr_1", Some("c2")).unwrap().is_empty(), "another client's");
    assert!(store.code_families("alpha", "usr_2", None).unwrap().is_empty(), "another user's");
    assert!(store.code_families("beta", "usr_1", None).unwrap().is_empty(), "another realm's");
    assert_eq!(store.redeem_code("alpha", b"h1", &issue(600), 600).unwrap(), Redemption::Reused(long));
    assert_eq!(store.sweep_codes(1000).unwrap(), 1);
    assert!(store.code_families("alpha", "usr_1", None).unwrap().is_empty());
}

pub fn a_consent_is_kept_per_user_and_client_replaced_whole_and_revoked<S: Storage + ?Sized>(store: &S) {
    realms(store);
    assert_eq!(store.consent("alpha", "usr_1", "c1").unwrap(), None);
    let first = consent("usr_1", "c2", 10);
    store.save_consent("alpha", &first).unwrap();
    assert_eq!(store.consent("alpha", "usr_1", "c2").unwrap(), Some(first.clone()));
    assert_eq!(store.consent("beta", "usr_1", "c2").unwrap(), None, "another realm's");
    assert_eq!(store.consent("alpha", "usr_2", "c2").unwrap(), None, "another user's");

    // Saved again, for the same user and client: replaced whole.
    let wider = consent("usr_1", "c2", 30);
    let wider = Consent { scope: "read write".into(), resources: vec![], ..wider };
    store.save_consent("alpha", &wider).unwrap();
    assert_eq!(store.consent("alpha", "usr_1", "c2").unwrap(), Some(wider.clone()));

    // Listed oldest first, the user's own only.
    store.save_consent("alpha", &consent("usr_1", "c1", 20)).unwrap();
    store.save_consent("alpha", &consent("usr_2", "c1", 5)).unwrap();
    store.save_consent("beta", &consent("usr_1", "c1", 1)).unwrap();
    assert_eq!(store.consents("alpha", "usr_1").unwrap(), [consent("usr_1", "c1", 20), wider.clone()]);
    assert_eq!(store.consents("alpha", "usr_2").unwrap(), [consent("usr_2", "c1", 5)]);
    assert!(store.consents("alpha", "usr_9").unwrap().is_empty());

    assert!(!store.revoke_consent("beta", "usr_1", "c2").unwrap(), "not beta's");
    assert!(store.revoke_consent("alpha", "usr_1", "c2").unwrap());
    assert!(!store.revoke_consent("alpha", "usr_1", "c2").unwrap(), "already revoked");
    assert_eq!(store.consent("alpha", "usr_1", "c2").unwrap(), None);
    assert_eq!(store.consents("alpha", "usr_1").unwrap(), [consent("usr_1", "c1", 20)]);
    assert_eq!(store.consents("beta", "usr_1").unwrap(), [consent("usr_1", "c1", 1)]);
}

/// A code and a consent of each user with each client, in both realms.
fn everything<S: Storage + ?Sized>(store: &S) {
    realms(store);
    for realm in ["alpha", "beta"] {
        for client in ["c1", "c2"] {
            for subject in ["usr_1", "usr_2"] {
                let hash = format!("{client}/{subject}").into_bytes();
                store.insert_code(realm, &hash, &authorization_code(client, subject)).unwrap();
                store.save_consent(realm, &consent(subject, client, 0)).unwrap();
            }
        }
    }
}

/// Which of `everything`'s codes and consents the realm still has, as
/// `client/subject`.
fn left<S: Storage + ?Sized>(store: &S, realm: &str) -> (Vec<String>, Vec<String>) {
    let (mut codes, mut consents) = (Vec::new(), Vec::new());
    for client in ["c1", "c2"] {
        for subject in ["usr_1", "usr_2"] {
            let pair = format!("{client}/{subject}");
            if store.code(realm, pair.as_bytes(), 10).unwrap().is_some() {
                codes.push(pair.clone());
            }
            if store.consent(realm, subject, client).unwrap().is_some() {
                consents.push(pair);
            }
        }
    }
    (codes, consents)
}

pub fn deleting_a_realm_deletes_its_codes_and_consents<S: Storage + ?Sized>(store: &S) {
    everything(store);
    assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
    assert_eq!(left(store, "alpha"), (vec![], vec![]));
    assert_eq!(left(store, "beta").0.len(), 4, "another realm's stay");
    assert_eq!(left(store, "beta").1.len(), 4);
    // A realm of the same name starts with none, even once it has the
    // same clients and users again.
    realm(store, "alpha");
    assert_eq!(left(store, "alpha"), (vec![], vec![]));
    assert_eq!(store.redeem_code("alpha", b"c1/usr_1", &issue(20), 20).unwrap(), Redemption::Unknown);
}

pub fn deleting_a_user_deletes_its_codes_and_consents<S: Storage + ?Sized>(store: &S) {
    everything(store);
    assert_eq!(store.redeem_code("alpha", b"c1/usr_1", &issue(20), 20).unwrap(), Redemption::Redeemed);
    assert!(store.delete_user("alpha", "usr_1", &audit("delete-user")).unwrap());
    let others = vec!["c1/usr_2".to_string(), "c2/usr_2".to_string()];
    assert_eq!(left(store, "alpha"), (others.clone(), others));
    assert!(store.consents("alpha", "usr_1").unwrap().is_empty());
    assert_eq!(store.redeem_code("alpha", b"c1/usr_1", &issue(30), 30).unwrap(), Redemption::Unknown, "used ones too");
    assert_eq!(left(store, "beta").0.len(), 4, "the same subject in another realm is another user");
    assert_eq!(left(store, "beta").1.len(), 4);
}

pub fn deleting_a_client_deletes_its_codes_and_consents<S: Storage + ?Sized>(store: &S) {
    everything(store);
    assert_eq!(store.redeem_code("alpha", b"c1/usr_1", &issue(20), 20).unwrap(), Redemption::Redeemed);
    assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    let others = vec!["c2/usr_1".to_string(), "c2/usr_2".to_string()];
    assert_eq!(left(store, "alpha"), (others.clone(), others));
    assert_eq!(store.redeem_code("alpha", b"c1/usr_1", &issue(30), 30).unwrap(), Redemption::Unknown, "used ones too");
    assert_eq!(left(store, "beta").0.len(), 4, "the same client id in another realm is another client");
    assert_eq!(left(store, "beta").1.len(), 4);
}
