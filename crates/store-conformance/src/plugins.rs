//! The contract of [`PluginRepository`]: versions that count up, one
//! active version per name (any earlier one can be made active again),
//! one hook kind per name, a quota past which nothing is stored, and
//! compiled artifacts that live exactly as long as a version uses them.

use agentauth_core::HookKind;
use agentauth_core::ports::{PluginPush, PluginQuota, PushOutcome, Storage};

use crate::fixtures::{audit, pushed};

/// The versions of `name` that are active.
fn active<S: Storage + ?Sized>(store: &S, realm: &str, name: &str) -> Vec<i64> {
    let versions = store.plugin_versions(realm).unwrap();
    versions.iter().filter(|v| v.name == name && v.active).map(|v| v.version).collect()
}

/// Which of the components `hashes` have a compiled artifact stored.
fn artifacts<S: Storage + ?Sized>(store: &S, hashes: &[&str]) -> Vec<String> {
    let stored = store.plugin_artifact_hashes().unwrap();
    hashes.iter().filter(|h| stored.iter().any(|s| s == *h)).map(|h| h.to_string()).collect()
}

pub fn plugin_versions_count_up_and_the_newest_is_active<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    assert_eq!(store.add_plugin_version("alpha", "p", HookKind::MayAct, "aa", b"v1", 0).unwrap(), 1);
    assert_eq!(store.add_plugin_version("alpha", "p", HookKind::MayAct, "bb", b"v2", 0).unwrap(), 2);
    assert_eq!(store.add_plugin_version("alpha", "q", HookKind::Dcr, "cc", b"q1", 0).unwrap(), 1);
    let live = store.active_plugins("alpha").unwrap();
    let live: Vec<_> = live.iter().map(|p| (p.name.as_str(), p.version, p.hook, p.component.as_slice())).collect();
    assert_eq!(live, [("p", 2, HookKind::MayAct, &b"v2"[..]), ("q", 1, HookKind::Dcr, &b"q1"[..])]);
    let listed = store.plugin_versions("alpha").unwrap();
    let listed: Vec<_> = listed.iter().map(|v| (v.name.as_str(), v.version, v.size, v.active)).collect();
    assert_eq!(listed, [("p", 1, 2, false), ("p", 2, 2, true), ("q", 1, 2, true)]);
    let versions = store.plugin_versions("alpha").unwrap();
    assert!(versions.iter().all(|v| v.uploaded_by.is_none() && v.language.is_none()), "provisioned, not pushed");
    assert_eq!(store.plugin_usage("alpha").unwrap(), (3, 6));
    assert_eq!(store.plugin_component("alpha", "p", 1).unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(store.plugin_component("alpha", "p", 3).unwrap(), None);
}

pub fn pushes_activations_and_deletions_are_audited_in_the_same_commit<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let push = |c: &'static [u8], activate| PluginPush { activate, artifact: None, ..pushed("p", "aa", c) };
    assert_eq!(
        store.push_plugin("alpha", &push(b"v1", true), &audit("push")).unwrap(),
        PushOutcome::Stored { version: 1 }
    );
    assert_eq!(
        store.push_plugin("alpha", &push(b"v2", false), &audit("push")).unwrap(),
        PushOutcome::Stored { version: 2 }
    );
    assert_eq!(active(store, "alpha", "p"), [1], "an inactive push leaves the active version");
    let pushed = store.plugin_versions("alpha").unwrap();
    let who: Vec<_> = pushed.iter().map(|v| (v.uploaded_by.as_deref(), v.language.as_deref())).collect();
    assert_eq!(who, [(Some("admin"), Some("Rust")); 2], "each version keeps who pushed it and its language");
    assert!(store.activate_plugin("alpha", "p", 2, &audit("activate")).unwrap());
    assert_eq!(active(store, "alpha", "p"), [2]);
    assert!(!store.activate_plugin("alpha", "p", 9, &audit("activate")).unwrap());
    assert_eq!(store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap(), 1);
    assert_eq!(store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap(), 0);
    let log: Vec<_> =
        store.audit("alpha", 0, 100).unwrap().into_iter().map(|(_, e)| (e.action, e.version, e.sha256)).collect();
    let aa = || Some("aa".to_string());
    assert_eq!(
        log,
        [
            ("push".into(), Some(1), None),
            ("push".into(), Some(2), None),
            ("activate".into(), Some(2), aa()),
            ("delete".into(), Some(1), aa())
        ],
        "refused changes record nothing"
    );
}

pub fn activating_an_earlier_version_rolls_the_plugin_back<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    for (sha256, component) in [("aa", b"v1"), ("bb", b"v2"), ("cc", b"v3")] {
        store.push_plugin("alpha", &pushed("p", sha256, component), &audit("push")).unwrap();
    }
    store.push_plugin("alpha", &pushed("q", "dd", b"q1"), &audit("push")).unwrap();
    assert_eq!(active(store, "alpha", "p"), [3]);
    assert!(store.activate_plugin("alpha", "p", 1, &audit("rollback")).unwrap());
    assert_eq!(active(store, "alpha", "p"), [1]);
    assert_eq!(active(store, "alpha", "q"), [1], "another plugin keeps its version");
    let live = store.active_plugins("alpha").unwrap();
    assert_eq!(live.iter().map(|p| (p.name.as_str(), p.version)).collect::<Vec<_>>(), [("p", 1), ("q", 1)]);
    assert_eq!(live[0].component, b"v1");
    assert_eq!(store.plugin_versions("alpha").unwrap().len(), 4, "nothing is deleted by a rollback");
}

pub fn a_plugin_name_keeps_its_hook_kind<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
    let dcr = PluginPush { hook: HookKind::Dcr, ..pushed("p", "bb", b"v2") };
    assert_eq!(
        store.push_plugin("alpha", &dcr, &audit("push")).unwrap(),
        PushOutcome::HookMismatch { existing: HookKind::MayAct }
    );
    assert_eq!(store.plugin_versions("alpha").unwrap().len(), 1);
    assert_eq!(artifacts(store, &["aa", "bb"]), ["aa"], "a refused push stores no artifact");
    assert_eq!(store.audit("alpha", 0, 100).unwrap().len(), 1, "nor an audit entry");
    assert_eq!(store.push_plugin("beta", &dcr, &audit("push")).unwrap(), PushOutcome::Stored { version: 1 });
}

pub fn a_push_past_the_quota_stores_neither_the_version_nor_its_artifact<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let quota = PluginQuota { versions: 2, bytes: 5 };
    let within = PluginPush { quota, ..pushed("p", "aa", b"abc") };
    assert_eq!(store.push_plugin("alpha", &within, &audit("push")).unwrap(), PushOutcome::Stored { version: 1 });
    let too_big = PluginPush { quota, ..pushed("p", "bb", b"abc") };
    assert_eq!(
        store.push_plugin("alpha", &too_big, &audit("push")).unwrap(),
        PushOutcome::OverQuota { versions: 1, bytes: 3 }
    );
    assert_eq!(store.plugin_usage("alpha").unwrap(), (1, 3));
    assert_eq!(artifacts(store, &["aa", "bb"]), ["aa"]);
    let small = PluginPush { quota, ..pushed("p", "bb", b"ab") };
    assert_eq!(store.push_plugin("alpha", &small, &audit("push")).unwrap(), PushOutcome::Stored { version: 2 });
    let third = PluginPush { quota, ..pushed("p", "cc", b"") };
    assert_eq!(
        store.push_plugin("alpha", &third, &audit("push")).unwrap(),
        PushOutcome::OverQuota { versions: 2, bytes: 5 },
        "no version past the count, however small"
    );
    assert_eq!(active(store, "alpha", "p"), [2], "a refused push leaves the active version");
}

pub fn a_deleted_version_takes_its_artifact_unless_stored_bytes_still_use_it<S: Storage + ?Sized>(store: &S) {
    for realm in ["alpha", "beta"] {
        store.create_realm_if_absent(realm, "{}", 0).unwrap();
    }
    store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
    store.push_plugin("alpha", &pushed("p", "bb", b"v2"), &audit("push")).unwrap();
    store.push_plugin("beta", &pushed("q", "bb", b"v2"), &audit("push")).unwrap();
    assert_eq!(artifacts(store, &["aa", "bb"]), ["aa", "bb"]);

    store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap();
    assert_eq!(artifacts(store, &["aa", "bb"]), ["bb"], "version 1's artifact went with it");
    store.delete_plugin("alpha", "p", None, &audit("delete")).unwrap();
    assert_eq!(artifacts(store, &["aa", "bb"]), ["bb"], "realm beta still stores the same bytes");
    store.delete_realm("beta", &audit("delete-realm")).unwrap();
    assert!(artifacts(store, &["aa", "bb"]).is_empty(), "the last version gone, so is its artifact");
}

pub fn an_artifact_is_kept_for_one_engine_at_a_time<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.add_plugin_version("alpha", "p", HookKind::Dcr, "aa", b"v1", 0).unwrap();
    assert_eq!(store.plugin_artifact("aa", "engine-1").unwrap(), None);
    store.put_plugin_artifact("aa", "engine-1", b"old", 0).unwrap();
    store.put_plugin_artifact("aa", "engine-2", b"new", 0).unwrap();
    assert_eq!(store.plugin_artifact("aa", "engine-1").unwrap(), None, "no build uses the old engine's again");
    assert_eq!(store.plugin_artifact("aa", "engine-2").unwrap().as_deref(), Some(&b"new"[..]));
    store.put_plugin_artifact("aa", "engine-2", b"newer", 0).unwrap();
    assert_eq!(store.plugin_artifact("aa", "engine-2").unwrap().as_deref(), Some(&b"newer"[..]));
    assert_eq!(store.plugin_artifact_hashes().unwrap(), ["aa"]);
    assert_eq!(store.delete_plugin_artifacts().unwrap(), 1);
    assert!(store.plugin_artifact_hashes().unwrap().is_empty());
}

pub fn a_sweep_drops_artifacts_no_stored_version_uses<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.add_plugin_version("alpha", "p", HookKind::Dcr, "aa", b"v1", 0).unwrap();
    // Compiled while its version was deleted, say.
    store.put_plugin_artifact("aa", "engine", b"used", 0).unwrap();
    store.put_plugin_artifact("zz", "engine", b"orphan", 0).unwrap();
    store.sweep(0).unwrap();
    assert_eq!(store.plugin_artifact_hashes().unwrap(), ["aa"]);
}
