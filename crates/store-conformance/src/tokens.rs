//! The contract of [`TokenRepository`]: tokens found by hash in their
//! realm until they expire, refresh tokens that rotate exactly once,
//! revocation that reaches every family derived from what is revoked,
//! derived families refused once their parent is gone, JWT revocations,
//! and client assertions used once.

use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_core::ports::{AuditEntry, Lineage, NewToken, Rotation, Storage, TokenKind, TokenRow};

use crate::fixtures::client_row;

/// A token of client `c1`, expiring at 100.
fn token<'a>(hash: &'a [u8], family: Option<&'a str>, kind: TokenKind, grant: &'a str) -> NewToken<'a> {
    NewToken { hash, client_id: "c1", family, kind, grant, expires_at: 100 }
}

fn refresh<'a>(hash: &'a [u8], family: &'a str) -> NewToken<'a> {
    token(hash, Some(family), TokenKind::Refresh, "{}")
}

/// Realms `alpha` and `beta`, each with client `c1`.
fn realms<S: Storage + ?Sized>(store: &S) {
    for realm in ["alpha", "beta"] {
        store.create_realm_if_absent(realm, "{}", 0).unwrap();
        store.insert_client(realm, &client_row("c1"), u64::MAX).unwrap();
    }
}

pub fn a_token_is_found_only_in_its_realm_of_its_kind_before_it_expires<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_tokens("alpha", &[token(b"t", None, TokenKind::Access, "{\"g\":1}")]).unwrap();
    assert_eq!(store.token(b"t", "alpha", TokenKind::Access, 99).unwrap().as_deref(), Some("{\"g\":1}"));
    assert_eq!(store.token(b"t", "alpha", TokenKind::Access, 100).unwrap(), None, "expired");
    assert_eq!(store.token(b"t", "alpha", TokenKind::Refresh, 0).unwrap(), None, "other kind");
    assert_eq!(store.token(b"t", "beta", TokenKind::Access, 0).unwrap(), None, "other realm");
    let row = TokenRow {
        kind: TokenKind::Access,
        grant: "{\"g\":1}".into(),
        client_id: "c1".into(),
        family: None,
        used: false,
        expires_at: 100,
    };
    assert_eq!(store.token_row(b"t", "alpha", 0).unwrap(), Some(row));
    assert_eq!(store.count_tokens("alpha", TokenKind::Access).unwrap(), 1);
    assert_eq!(store.count_tokens("beta", TokenKind::Access).unwrap(), 0);
}

pub fn live_tokens_are_counted_per_client_in_their_realm<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
    let of_c2 = |hash: &'static [u8], kind, expires_at| NewToken {
        hash,
        client_id: "c2",
        family: Some("f2"),
        kind,
        grant: "{}",
        expires_at,
    };
    store.insert_tokens("alpha", &[token(b"a1", None, TokenKind::Access, "{}"), refresh(b"r1", "f1")]).unwrap();
    store.insert_tokens("alpha", &[of_c2(b"a2", TokenKind::Jwt, 100), of_c2(b"old", TokenKind::Access, 10)]).unwrap();
    store.insert_tokens("beta", &[token(b"b1", None, TokenKind::Access, "{}")]).unwrap();
    let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let counted = store.live_token_counts("alpha", &ids(&["c1", "c2", "c3"]), 50).unwrap();
    assert_eq!(counted, [("c1".to_string(), 2), ("c2".to_string(), 1)], "expired tokens and other realms not counted");
    // A used refresh token is no longer live.
    assert_eq!(store.rotate_token("alpha", b"r1", &[], 50, &AuditEntry::default()).unwrap(), Rotation::Rotated);
    assert_eq!(store.live_token_counts("alpha", &ids(&["c1"]), 50).unwrap(), [("c1".to_string(), 1)]);
    assert_eq!(store.live_token_counts("alpha", &[], 50).unwrap(), []);
    assert_eq!(store.live_token_counts("alpha", &ids(&["c1"]), 100).unwrap(), [], "all expired");
}

pub fn rotating_a_refresh_token_twice_reports_reuse<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_tokens("alpha", &[refresh(b"old", "f1")]).unwrap();
    assert_eq!(
        store.rotate_token("alpha", b"old", &[refresh(b"new", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Rotated
    );
    assert!(store.token_row(b"old", "alpha", 0).unwrap().unwrap().used, "kept, marked used");
    assert_eq!(
        store.rotate_token("alpha", b"old", &[refresh(b"other", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Reused
    );
    assert_eq!(store.token(b"other", "alpha", TokenKind::Refresh, 0).unwrap(), None, "a reuse stores nothing");
}

pub fn racing_rotations_of_one_refresh_token_rotate_it_once<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_tokens("alpha", &[refresh(b"old", "f1")]).unwrap();
    let before = store.latest_audit_id("alpha").unwrap();
    let reused =
        AuditEntry { at: 3, actor: "token-endpoint".into(), action: "revoke-family".into(), ..Default::default() };
    let rotated = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (rotated, reused) = (&rotated, &reused);
            s.spawn(move || {
                let next = [t];
                match store.rotate_token("alpha", b"old", &[refresh(&next, "f1")], 0, reused).unwrap() {
                    Rotation::Rotated => {
                        rotated.fetch_add(1, Ordering::SeqCst);
                    }
                    Rotation::Reused | Rotation::Unknown => {}
                }
            });
        }
    });
    assert_eq!(rotated.load(Ordering::SeqCst), 1);
    // The losers presented a used token: the family is revoked, and that
    // is recorded once, by the one that revoked it.
    assert_eq!(store.count_tokens("alpha", TokenKind::Refresh).unwrap(), 0);
    let recorded: Vec<AuditEntry> = store.audit("alpha", before, 10).unwrap().into_iter().map(|(_, e)| e).collect();
    assert_eq!(recorded, [reused]);
}

pub fn reusing_a_refresh_token_revokes_its_whole_family<S: Storage + ?Sized>(store: &S) {
    realms(store);
    let jwt = |hash, jti| token(hash, Some("f1"), TokenKind::Jwt, jti);
    store.insert_tokens("alpha", &[refresh(b"old", "f1"), jwt(b"j1", "jti-1")]).unwrap();
    store.insert_tokens("alpha", &[refresh(b"elsewhere", "f9")]).unwrap();
    // Hashes are keyed hashes of random tokens: no two realms share one.
    store.insert_tokens("beta", &[refresh(b"beta-old", "f1"), jwt(b"beta-j1", "jti-1")]).unwrap();
    assert_eq!(
        store
            .rotate_token("alpha", b"old", &[refresh(b"new", "f1"), jwt(b"j2", "jti-2")], 0, &AuditEntry::default())
            .unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        store.rotate_token("alpha", b"old", &[refresh(b"x", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Reused
    );
    assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 0).unwrap(), None, "the successor goes too");
    assert!(store.is_jwt_revoked("alpha", "jti-1").unwrap() && store.is_jwt_revoked("alpha", "jti-2").unwrap());
    assert_eq!(
        store.rotate_token("alpha", b"new", &[refresh(b"y", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Unknown
    );
    assert!(store.token(b"elsewhere", "alpha", TokenKind::Refresh, 0).unwrap().is_some(), "another family stays");
    assert!(!store.is_jwt_revoked("beta", "jti-1").unwrap(), "another realm's family stays");
    assert!(store.token(b"beta-old", "beta", TokenKind::Refresh, 0).unwrap().is_some());
}

/// A refresh keeps its grant's resources whole in the successor while the
/// access token it issues may be for fewer (RFC 8707 §2.2): the store
/// keeps each successor's grant as given, never its predecessor's.
pub fn a_rotation_stores_each_successor_with_the_grant_it_was_given<S: Storage + ?Sized>(store: &S) {
    realms(store);
    let granted = r#"{"scope":"read write","audience":["https://a.example/mcp","https://b.example/api"]}"#;
    store.insert_tokens("alpha", &[token(b"old", Some("f1"), TokenKind::Refresh, granted)]).unwrap();
    let narrowed = r#"{"scope":"read","audience":["https://a.example/mcp","https://b.example/api"]}"#;
    let access = r#"{"aud":"https://b.example/api","scope":"read"}"#;
    let successors =
        [token(b"new", Some("f1"), TokenKind::Refresh, narrowed), token(b"at", Some("f1"), TokenKind::Access, access)];
    assert_eq!(store.rotate_token("alpha", b"old", &successors, 0, &AuditEntry::default()).unwrap(), Rotation::Rotated);
    assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 0).unwrap().as_deref(), Some(narrowed));
    assert_eq!(store.token(b"at", "alpha", TokenKind::Access, 0).unwrap().as_deref(), Some(access));
    let old = store.token_row(b"old", "alpha", 0).unwrap().unwrap();
    assert_eq!((old.grant.as_str(), old.used), (granted, true), "the used token keeps its own grant");
}

pub fn only_a_live_refresh_token_of_the_realm_rotates<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_tokens("alpha", &[refresh(b"r", "f1"), token(b"a", None, TokenKind::Access, "{}")]).unwrap();
    assert_eq!(
        store.rotate_token("beta", b"r", &[refresh(b"n", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        store.rotate_token("alpha", b"a", &[refresh(b"n", "f1")], 0, &AuditEntry::default()).unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        store.rotate_token("alpha", b"r", &[refresh(b"n", "f1")], 100, &AuditEntry::default()).unwrap(),
        Rotation::Unknown,
        "expired"
    );
    assert_eq!(store.token(b"n", "alpha", TokenKind::Refresh, 0).unwrap(), None);
    assert_eq!(
        store.rotate_token("alpha", b"r", &[refresh(b"n", "f1")], 99, &AuditEntry::default()).unwrap(),
        Rotation::Rotated
    );
}

/// Family `f2` derived from the JWT `jti-1` of family `f1`, and `f3`
/// derived from `f2`'s JWT `jti-2`.
fn derived_families<S: Storage + ?Sized>(store: &S) {
    let jwt = |hash, family, jti| token(hash, Some(family), TokenKind::Jwt, jti);
    store.insert_tokens("alpha", &[refresh(b"r1", "f1"), jwt(b"j1", "f1", "jti-1")]).unwrap();
    let from = |family, parent_jti, parent_family| Lineage {
        family,
        parent_jti,
        parent_hash: None,
        parent_family: Some(parent_family),
        parent_client: "c1",
        expires_at: 100,
    };
    let f2 = [refresh(b"r2", "f2"), jwt(b"j2", "f2", "jti-2")];
    assert!(store.insert_derived_family("alpha", &from("f2", "jti-1", "f1"), &f2).unwrap());
    let f3 = [refresh(b"r3", "f3"), jwt(b"j3", "f3", "jti-3")];
    assert!(store.insert_derived_family("alpha", &from("f3", "jti-2", "f2"), &f3).unwrap());
}

fn live_refresh_tokens<S: Storage + ?Sized>(store: &S) -> Vec<&'static str> {
    [("r1", b"r1"), ("r2", b"r2"), ("r3", b"r3")]
        .into_iter()
        .filter(|(_, hash)| store.token(*hash, "alpha", TokenKind::Refresh, 0).unwrap().is_some())
        .map(|(name, _)| name)
        .collect()
}

pub fn revoking_a_family_revokes_every_family_derived_from_it<S: Storage + ?Sized>(store: &S) {
    realms(store);
    derived_families(store);
    assert_eq!(live_refresh_tokens(store), ["r1", "r2", "r3"]);
    let before = store.latest_audit_id("alpha").unwrap();
    let entry =
        AuditEntry { at: 7, actor: "token-endpoint".into(), action: "revoke-family".into(), ..Default::default() };
    store.revoke_token("alpha", b"r2", Some("f2"), Some(&entry)).unwrap();
    assert_eq!(live_refresh_tokens(store), ["r1"], "f2 and f3, derived from it, are gone");
    // Revoked again, by a racing request: nothing to revoke, nothing
    // recorded.
    store.revoke_token("alpha", b"r2", Some("f2"), Some(&entry)).unwrap();
    let recorded: Vec<AuditEntry> = store.audit("alpha", before, 10).unwrap().into_iter().map(|(_, e)| e).collect();
    assert_eq!(recorded, [entry], "the revocation's audit, recorded with it, once");
    assert!(store.is_jwt_revoked("alpha", "jti-2").unwrap() && store.is_jwt_revoked("alpha", "jti-3").unwrap());
    assert!(!store.is_jwt_revoked("alpha", "jti-1").unwrap(), "the parent family stays");
}

pub fn revoking_a_jwt_revokes_the_families_derived_from_it<S: Storage + ?Sized>(store: &S) {
    realms(store);
    derived_families(store);
    store.revoke_jwt("alpha", "jti-1", 100).unwrap();
    assert!(store.is_jwt_revoked("alpha", "jti-1").unwrap());
    assert!(!store.is_jwt_revoked("beta", "jti-1").unwrap(), "a revocation is the realm's");
    assert_eq!(live_refresh_tokens(store), ["r1"]);
    store.revoke_jwt("alpha", "jti-1", 100).unwrap();
    assert!(store.is_jwt_revoked("alpha", "jti-1").unwrap(), "revoking twice is revoking once");
}

pub fn deleting_a_client_revokes_the_families_derived_from_its_tokens<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_client("alpha", &client_row("actor"), u64::MAX).unwrap();
    store.insert_tokens("alpha", &[token(b"a", None, TokenKind::Access, "{}")]).unwrap();
    let lineage = Lineage {
        family: "f2",
        parent_jti: "jti-a",
        parent_hash: Some(b"a"),
        parent_family: None,
        parent_client: "c1",
        expires_at: 100,
    };
    let family = [NewToken { client_id: "actor", ..refresh(b"r2", "f2") }];
    assert!(store.insert_derived_family("alpha", &lineage, &family).unwrap());
    assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    assert_eq!(store.token(b"r2", "alpha", TokenKind::Refresh, 0).unwrap(), None);
}

pub fn a_family_derived_from_a_revoked_token_is_refused<S: Storage + ?Sized>(store: &S) {
    realms(store);
    store.insert_tokens("alpha", &[refresh(b"r1", "f1"), token(b"opaque", None, TokenKind::Access, "{}")]).unwrap();
    let lineage = |family, parent_jti, parent_hash, parent_family| Lineage {
        family,
        parent_jti,
        parent_hash,
        parent_family,
        parent_client: "c1",
        expires_at: 100,
    };
    let attempt =
        |l: &Lineage<'_>, hash: &[u8]| store.insert_derived_family("alpha", l, &[refresh(hash, l.family)]).unwrap();
    // A revoked JWT.
    store.revoke_jwt("alpha", "jti-revoked", 100).unwrap();
    assert!(!attempt(&lineage("f2", "jti-revoked", None, None), b"r2"));
    // An opaque token revoked meanwhile.
    store.revoke_opaque("alpha", b"opaque", "jti-opaque").unwrap();
    assert!(!attempt(&lineage("f3", "jti-opaque", Some(b"opaque"), None), b"r3"));
    // A token of a family revoked meanwhile.
    store.revoke_token("alpha", b"r1", Some("f1"), None).unwrap();
    assert!(!attempt(&lineage("f4", "jti-f1", None, Some("f1")), b"r4"));
    // A token of a client deleted meanwhile.
    assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
    assert!(!attempt(&lineage("f5", "jti-c1", None, None), b"r5"));
    assert_eq!(store.count_tokens("alpha", TokenKind::Refresh).unwrap(), 0, "nothing of a refused family is stored");
    // A live parent: the family starts.
    assert!(
        store.insert_derived_family("beta", &lineage("f6", "jti-live", None, None), &[refresh(b"r6", "f6")]).unwrap()
    );
    assert_eq!(store.count_tokens("beta", TokenKind::Refresh).unwrap(), 1);
}

pub fn an_assertion_jti_is_used_once<S: Storage + ?Sized>(store: &S) {
    realms(store);
    assert!(store.use_assertion_jti("alpha", "c1", "a1", 100).unwrap());
    assert!(!store.use_assertion_jti("alpha", "c1", "a1", 100).unwrap(), "a replay");
    assert!(store.use_assertion_jti("alpha", "c2", "a1", 100).unwrap(), "another client's assertion");
    assert!(store.use_assertion_jti("beta", "c1", "a1", 100).unwrap(), "another realm's assertion");
}

pub fn a_sweep_removes_only_what_has_expired<S: Storage + ?Sized>(store: &S) {
    realms(store);
    let at = |hash, expires_at| NewToken { expires_at, ..token(hash, None, TokenKind::Access, "{}") };
    store.insert_tokens("alpha", &[at(b"old", 10), at(b"live", 100)]).unwrap();
    store.revoke_jwt("alpha", "j-old", 10).unwrap();
    store.revoke_jwt("alpha", "j-live", 100).unwrap();
    store.use_assertion_jti("alpha", "c1", "a-old", 10).unwrap();
    store.use_assertion_jti("alpha", "c1", "a-live", 100).unwrap();
    assert_eq!(store.sweep(50).unwrap(), 3);
    assert!(store.token(b"live", "alpha", TokenKind::Access, 50).unwrap().is_some());
    assert!(store.is_jwt_revoked("alpha", "j-live").unwrap());
    assert!(!store.is_jwt_revoked("alpha", "j-old").unwrap());
    assert!(!store.use_assertion_jti("alpha", "c1", "a-live", 100).unwrap(), "a live assertion id is kept");
    assert!(store.use_assertion_jti("alpha", "c1", "a-old", 100).unwrap(), "an expired one is forgotten");
}
