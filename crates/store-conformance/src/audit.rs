//! The contract of [`AuditRepository`]: the changes that record
//! themselves are listed in order, page by page, and a realm's log is its
//! own, not that of an earlier realm of its name.

use agentauth_core::ports::Storage;

use crate::fixtures::{audit, pushed};

pub fn audited_changes_are_listed_in_order_a_page_at_a_time<S: Storage + ?Sized>(store: &S) {
    assert!(store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert!(store.create_realm("beta", "{}", &audit("create-realm")).unwrap());
    assert!(store.set_realm_settings("alpha", "{}", &audit("update-realm")).unwrap());
    store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
    // Refused changes record nothing.
    assert!(!store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert!(!store.delete_realm_admin("alpha", "nobody", &audit("delete-admin")).unwrap());
    let log = store.audit("alpha", 0, 100).unwrap();
    let actions: Vec<&str> = log.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(actions, ["create-realm", "update-realm", "push"]);
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0), "ids grow");
    assert_eq!(log[0].1, audit("create-realm"), "entries read back whole");
    assert_eq!(log[2].1.version, Some(1), "a push records the version it stored");
    let page = store.audit("alpha", log[0].0, 1).unwrap();
    assert_eq!(page, [log[1].clone()]);
    assert!(store.audit("alpha", log[2].0, 100).unwrap().is_empty());
    assert_eq!(store.audit("beta", 0, 100).unwrap().len(), 1);
    assert!(store.audit("nowhere", 0, 100).unwrap().is_empty());
}

pub fn a_new_realm_of_a_deleted_realms_name_starts_its_own_audit_log<S: Storage + ?Sized>(store: &S) {
    assert!(store.create_realm("beta", "{}", &audit("create-realm")).unwrap());
    store.push_plugin("beta", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
    assert!(store.delete_realm("beta", &audit("delete-realm")).unwrap());
    assert!(store.audit("beta", 0, 100).unwrap().is_empty(), "no realm, no log to show");
    assert!(store.create_realm("beta", "{}", &audit("create-realm")).unwrap());
    let log: Vec<String> = store.audit("beta", 0, 100).unwrap().into_iter().map(|(_, e)| e.action).collect();
    assert_eq!(log, ["create-realm"], "the earlier realm's push and deletion are not this realm's");
}

pub fn event_delivery_cursors_only_move_forward_per_receiver_and_go_with_the_realm<S: Storage + ?Sized>(store: &S) {
    assert!(store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert!(store.set_realm_settings("alpha", "{}", &audit("update-realm")).unwrap());
    let log = store.audit("alpha", 0, 100).unwrap();
    assert_eq!(store.latest_audit_id("alpha").unwrap(), log[1].0);
    assert_eq!(store.latest_audit_id("nowhere").unwrap(), 0);
    let (one, two) = ("https://one.example/events", "https://two.example/events");
    assert_eq!(store.event_cursor("alpha", one).unwrap(), None, "not started");
    store.set_event_cursor("alpha", one, log[1].0).unwrap();
    store.set_event_cursor("alpha", one, log[0].0).unwrap();
    assert_eq!(store.event_cursor("alpha", one).unwrap(), Some(log[1].0), "never moves back");
    assert_eq!(store.event_cursor("alpha", two).unwrap(), None, "each receiver its own");
    assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
    assert!(store.create_realm("alpha", "{}", &audit("create-realm")).unwrap());
    assert_eq!(store.event_cursor("alpha", one).unwrap(), None, "a new realm of the name starts afresh");
}
