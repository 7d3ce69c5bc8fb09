//! The contract of [`RealmRepository`]: realms, their settings and
//! admins, and a realm's deletion taking everything of it.

use agentauth_core::Algorithm;
use agentauth_core::ports::{KeyRow, Lineage, NewToken, RealmAdmin, RealmRow, Storage, TokenKind};

use crate::fixtures::{audit, client_row, pushed, user_row};

pub fn a_realm_is_created_once_and_listed_by_name<S: Storage + ?Sized>(store: &S) {
    assert!(store.create_realm_if_absent("beta", "{\"b\":1}", 0).unwrap());
    assert!(!store.create_realm_if_absent("beta", "{}", 0).unwrap());
    assert!(store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert!(!store.create_realm("alpha", "{\"a\":2}", &audit("create-realm")).unwrap());
    assert_eq!(store.realm_names().unwrap(), ["alpha", "beta"]);
    assert_eq!(store.realm("beta").unwrap(), Some(RealmRow { name: "beta".into(), settings: "{\"b\":1}".into() }));
    assert_eq!(store.realm("alpha").unwrap().unwrap().settings, "{}", "a second creation changes nothing");
    assert_eq!(store.realm("gamma").unwrap(), None);
}

pub fn a_realms_settings_are_replaced_whole<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{\"a\":1}", 0).unwrap();
    assert!(store.set_realm_settings("alpha", "{\"b\":2}", &audit("update-realm")).unwrap());
    assert_eq!(store.realm("alpha").unwrap().unwrap().settings, "{\"b\":2}");
    assert!(!store.set_realm_settings("gamma", "{}", &audit("update-realm")).unwrap());
    assert_eq!(store.realm("gamma").unwrap(), None, "updating no realm makes none");
}

pub fn a_realm_admin_is_found_by_its_token_hash_until_removed<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let admin = |id: &str, at| RealmAdmin { realm: "alpha".into(), id: id.into(), name: "ops".into(), created_at: at };
    store.create_realm_admin(&admin("a2", 2), b"token-2", &audit("create-admin")).unwrap();
    store.create_realm_admin(&admin("a1", 1), b"token-1", &audit("create-admin")).unwrap();
    assert_eq!(store.realm_admins("alpha").unwrap(), [admin("a1", 1), admin("a2", 2)], "oldest first");
    assert_eq!(store.realm_admin_by_token(b"token-2").unwrap(), Some(admin("a2", 2)));
    assert_eq!(store.realm_admin_by_token(b"token-3").unwrap(), None);
    assert!(store.delete_realm_admin("alpha", "a2", &audit("delete-admin")).unwrap());
    assert!(!store.delete_realm_admin("alpha", "a2", &audit("delete-admin")).unwrap());
    assert_eq!(store.realm_admin_by_token(b"token-2").unwrap(), None);
    assert_eq!(store.realm_admins("alpha").unwrap(), [admin("a1", 1)]);
}

pub fn a_realm_admin_of_no_realm_is_refused<S: Storage + ?Sized>(store: &S) {
    let admin = RealmAdmin { realm: "nowhere".into(), id: "a1".into(), name: "ops".into(), created_at: 0 };
    assert!(store.create_realm_admin(&admin, b"token", &audit("create-admin")).is_err());
    assert_eq!(store.realm_admin_by_token(b"token").unwrap(), None);
}

/// Something of every kind in `realm`, the plugin's component being the
/// realm's name.
fn fill<S: Storage + ?Sized>(store: &S, realm: &str) {
    assert!(store.create_realm(realm, "{}", &audit("create-realm")).unwrap());
    store.insert_client(realm, &client_row("c1"), u64::MAX).unwrap();
    let key = KeyRow { alg: Algorithm::EdDsa, pkcs8: vec![1], created_at: 0, signs_from: 0, retires_at: None };
    store.insert_first_key(realm, &key).unwrap();
    store.push_plugin(realm, &pushed("p", realm, realm.as_bytes()), &audit("push")).unwrap();
    let hash = |what: &str| format!("{realm}-{what}").into_bytes();
    let (opaque, jwt, refresh) = (hash("opaque"), hash("jwt"), hash("refresh"));
    let token = |hash, family, kind| NewToken { hash, client_id: "c1", family, kind, grant: "j1", expires_at: 9 };
    store
        .insert_tokens(realm, &[token(&opaque, None, TokenKind::Access), token(&jwt, Some("f1"), TokenKind::Jwt)])
        .unwrap();
    let lineage = Lineage {
        family: "f2",
        parent_jti: "j1",
        parent_hash: None,
        parent_family: Some("f1"),
        parent_client: "c1",
        expires_at: 9,
    };
    assert!(store.insert_derived_family(realm, &lineage, &[token(&refresh, Some("f2"), TokenKind::Refresh)]).unwrap());
    store.revoke_jwt(realm, "revoked", 9).unwrap();
    assert!(store.use_assertion_jti(realm, "c1", "assertion", 9).unwrap());
    let admin = RealmAdmin { realm: realm.into(), id: "a1".into(), name: "ops".into(), created_at: 0 };
    store.create_realm_admin(&admin, &hash("admin"), &audit("create-admin")).unwrap();
    assert!(store.create_user(realm, &user_row(&format!("usr_{realm}"), "alice"), &audit("create-user")).unwrap());
}

pub fn deleting_a_realm_takes_everything_of_it_and_nothing_of_another<S: Storage + ?Sized>(store: &S) {
    fill(store, "alpha");
    fill(store, "beta");
    // Read first, so that a cache in front of the clients has them.
    assert!(store.client("alpha", "c1").unwrap().is_some());
    assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
    assert!(!store.delete_realm("alpha", &audit("delete-realm")).unwrap(), "already gone");
    assert_eq!(store.realm("alpha").unwrap(), None);
    assert_eq!(store.realm_names().unwrap(), ["beta"]);

    for (realm, present) in [("alpha", false), ("beta", true)] {
        assert_eq!(store.client(realm, "c1").unwrap().is_some(), present, "{realm}: client");
        assert_eq!(store.client_exists(realm, "c1").unwrap(), present, "{realm}: client");
        assert_eq!(store.count_clients(realm).unwrap(), u64::from(present), "{realm}: client count");
        assert_eq!(store.keys(realm).unwrap().len(), usize::from(present), "{realm}: keys");
        assert_eq!(store.plugin_versions(realm).unwrap().len(), usize::from(present), "{realm}: plugins");
        assert_eq!(store.plugin_usage(realm).unwrap().0, i64::from(present), "{realm}: plugin usage");
        let opaque = format!("{realm}-opaque");
        assert_eq!(store.token_row(opaque.as_bytes(), realm, 0).unwrap().is_some(), present, "{realm}: tokens");
        assert_eq!(store.count_tokens(realm, TokenKind::Refresh).unwrap(), i64::from(present), "{realm}: families");
        assert_eq!(store.is_jwt_revoked(realm, "revoked").unwrap(), present, "{realm}: revocations");
        assert_eq!(store.realm_admins(realm).unwrap().len(), usize::from(present), "{realm}: admins");
        let admin = format!("{realm}-admin");
        assert_eq!(store.realm_admin_by_token(admin.as_bytes()).unwrap().is_some(), present, "{realm}: admin token");
        assert_eq!(store.plugin_artifact(realm, "engine").unwrap().is_some(), present, "{realm}: compiled plugin");
        assert_eq!(store.user_by_username(realm, "alice").unwrap().is_some(), present, "{realm}: users");
    }
    // A realm of the same name starts empty: no client, and no record of
    // the old realm's assertions.
    assert!(store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert_eq!(store.client("alpha", "c1").unwrap(), None);
    assert!(store.use_assertion_jti("alpha", "c1", "assertion", 9).unwrap());
    assert!(!store.use_assertion_jti("beta", "c1", "assertion", 9).unwrap());
}
