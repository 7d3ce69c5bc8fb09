//! The contract of [`UserRepository`]: a realm's users, one per username,
//! found by subject or username in their realm only, listed a page at a
//! time, their changes audited, gone with their realm.
//!
//! [`UserRepository`]: agentauth_core::ports::UserRepository

use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_core::ports::{Storage, UserRow, UserState};

use crate::fixtures::{audit, user_row};

/// The actions of the realm's audit log, in order.
fn audited<S: Storage + ?Sized>(store: &S, realm: &str) -> Vec<String> {
    store.audit(realm, 0, 1000).unwrap().into_iter().map(|(_, e)| e.action).collect()
}

pub fn a_user_is_read_back_as_stored_in_its_realm_only<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    let alice = user_row("usr_a1", "alice");
    assert!(store.create_user("alpha", &alice, &audit("create-user")).unwrap());
    assert_eq!(store.user("alpha", "usr_a1").unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_username("alpha", "alice").unwrap(), Some(alice.clone()));
    // Another realm has users of its own, under the same username too.
    assert_eq!(store.user("beta", "usr_a1").unwrap(), None);
    assert_eq!(store.user_by_username("beta", "alice").unwrap(), None);
    let other = user_row("usr_b1", "alice");
    assert!(store.create_user("beta", &other, &audit("create-user")).unwrap());
    assert_eq!(store.user_by_username("beta", "alice").unwrap(), Some(other));
    assert_eq!(store.user_by_username("alpha", "alice").unwrap(), Some(alice.clone()));
    // Usernames are compared exactly: normalising them is the caller's.
    assert_eq!(store.user_by_username("alpha", "Alice").unwrap(), None);
    // Optional fields are kept as given, absent or not.
    let mut bob = user_row("usr_a2", "bob");
    (bob.display_name, bob.email) = (None, Some("bob@example.com".into()));
    assert!(store.create_user("alpha", &bob, &audit("create-user")).unwrap());
    assert_eq!(store.user("alpha", "usr_a2").unwrap(), Some(bob));
    assert_eq!(audited(store, "alpha"), ["create-user", "create-user"]);
}

pub fn a_taken_username_is_refused_and_stores_nothing<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    assert!(store.create_user("alpha", &user_row("usr_1", "alice"), &audit("create-user")).unwrap());
    assert!(!store.create_user("alpha", &user_row("usr_2", "alice"), &audit("create-user")).unwrap());
    assert_eq!(store.user("alpha", "usr_2").unwrap(), None, "the refused user is not stored");
    assert_eq!(store.user_by_username("alpha", "alice").unwrap().map(|u| u.subject).as_deref(), Some("usr_1"));
    assert_eq!(audited(store, "alpha"), ["create-user"], "a refused creation is not audited");
    // A taken subject is no refusal to pass over: it fails.
    assert!(store.create_user("alpha", &user_row("usr_1", "bob"), &audit("create-user")).is_err());
    assert_eq!(store.user_by_username("alpha", "bob").unwrap(), None);
}

pub fn a_user_of_an_unknown_realm_is_refused<S: Storage + ?Sized>(store: &S) {
    assert!(store.create_user("nowhere", &user_row("usr_1", "alice"), &audit("create-user")).is_err());
    assert_eq!(store.user("nowhere", "usr_1").unwrap(), None);
    assert!(store.users("nowhere", "", 10).unwrap().is_empty());
}

pub fn racing_creations_of_one_username_store_one_user<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let stored = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let stored = &stored;
            s.spawn(move || {
                let user = user_row(&format!("usr_{t}"), "alice");
                if store.create_user("alpha", &user, &audit("create-user")).unwrap() {
                    stored.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(stored.load(Ordering::SeqCst), 1);
    assert_eq!(store.users("alpha", "", 100).unwrap().len(), 1);
    assert_eq!(audited(store, "alpha"), ["create-user"]);
}

pub fn users_are_listed_by_username_a_page_at_a_time<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    // Created out of order, with names whose order differs between a
    // bytewise comparison and a locale's (which may ignore punctuation).
    for (i, name) in ["carol", "a.b", "ab", "a_c", "bob", "a-d"].into_iter().enumerate() {
        assert!(store.create_user("alpha", &user_row(&format!("usr_{i}"), name), &audit("create-user")).unwrap());
    }
    assert!(store.create_user("beta", &user_row("usr_b", "aaron"), &audit("create-user")).unwrap());
    let names = |after: &str, limit| -> Vec<String> {
        store.users("alpha", after, limit).unwrap().into_iter().map(|u| u.username).collect()
    };
    assert_eq!(names("", 100), ["a-d", "a.b", "a_c", "ab", "bob", "carol"], "bytewise, this realm's only");
    assert_eq!(names("", 2), ["a-d", "a.b"]);
    assert_eq!(names("a.b", 2), ["a_c", "ab"]);
    assert_eq!(names("ab", 100), ["bob", "carol"]);
    assert!(names("carol", 100).is_empty());
    // A page starts after a name whether or not a user has it.
    assert_eq!(names("b", 1), ["bob"]);
    let listed = store.users("alpha", "", 1).unwrap();
    assert_eq!(listed, [user_row("usr_5", "a-d")], "listed whole");
}

pub fn a_users_state_and_password_change_and_are_audited<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    let alice = user_row("usr_1", "alice");
    assert!(store.create_user("alpha", &alice, &audit("create-user")).unwrap());

    assert!(store.set_user_state("alpha", "usr_1", UserState::Disabled, &audit("disable-user")).unwrap());
    assert_eq!(store.user("alpha", "usr_1").unwrap().unwrap().state, UserState::Disabled);
    assert_eq!(store.user_by_username("alpha", "alice").unwrap().unwrap().state, UserState::Disabled);
    assert!(store.set_user_state("alpha", "usr_1", UserState::Active, &audit("enable-user")).unwrap());
    assert_eq!(store.user("alpha", "usr_1").unwrap().unwrap().state, UserState::Active);

    assert!(store.set_user_password("alpha", "usr_1", "$argon2id$new", &audit("set-password")).unwrap());
    let changed = store.user("alpha", "usr_1").unwrap().unwrap();
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert_eq!(changed, UserRow { password_hash: "$argon2id$new".into(), ..alice }, "nothing else changed");

    // No such user, or not in this realm: nothing changes, nothing is audited.
    assert!(!store.set_user_state("alpha", "usr_9", UserState::Disabled, &audit("disable-user")).unwrap());
    assert!(!store.set_user_state("beta", "usr_1", UserState::Disabled, &audit("disable-user")).unwrap());
    assert!(!store.set_user_password("beta", "usr_1", "$argon2id$other", &audit("set-password")).unwrap());
    assert_eq!(store.user("alpha", "usr_1").unwrap().unwrap().password_hash, "$argon2id$new");
    assert_eq!(audited(store, "alpha"), ["create-user", "disable-user", "enable-user", "set-password"]);
    assert!(audited(store, "beta").is_empty());
}

pub fn a_deleted_user_is_gone_and_its_username_free_again<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    assert!(store.create_user("alpha", &user_row("usr_1", "alice"), &audit("create-user")).unwrap());
    assert!(!store.delete_user("beta", "usr_1", &audit("delete-user")).unwrap(), "not beta's user");
    assert!(store.delete_user("alpha", "usr_1", &audit("delete-user")).unwrap());
    assert!(!store.delete_user("alpha", "usr_1", &audit("delete-user")).unwrap(), "already gone");
    assert_eq!(store.user("alpha", "usr_1").unwrap(), None);
    assert_eq!(store.user_by_username("alpha", "alice").unwrap(), None);
    assert_eq!(audited(store, "alpha"), ["create-user", "delete-user"]);
    // The username may be taken again, by a user of another subject.
    assert!(store.create_user("alpha", &user_row("usr_2", "alice"), &audit("create-user")).unwrap());
    assert_eq!(store.user_by_username("alpha", "alice").unwrap().map(|u| u.subject).as_deref(), Some("usr_2"));
}

pub fn deleting_a_realm_deletes_its_users<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    assert!(store.create_user("alpha", &user_row("usr_1", "alice"), &audit("create-user")).unwrap());
    assert!(store.create_user("beta", &user_row("usr_2", "alice"), &audit("create-user")).unwrap());
    assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
    assert_eq!(store.user("alpha", "usr_1").unwrap(), None);
    assert!(store.users("alpha", "", 100).unwrap().is_empty());
    assert!(store.user("beta", "usr_2").unwrap().is_some(), "another realm's users stay");
    // A realm of the same name starts with none, and the username is free.
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    assert_eq!(store.user_by_username("alpha", "alice").unwrap(), None);
    assert!(store.create_user("alpha", &user_row("usr_3", "alice"), &audit("create-user")).unwrap());
}
