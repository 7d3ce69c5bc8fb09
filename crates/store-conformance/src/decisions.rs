//! The contract of [`DecisionRepository`]: decisions are read back as
//! recorded, filtered by client, plugin version, outcome and time, a page
//! at a time; a decision of a realm that does not exist is dropped; they
//! go with their realm and by age.

use agentauth_core::ports::{Decision, DecisionQuery, PluginUse, Storage};

use crate::fixtures::audit;

fn decision(at: i64, client: &str, plugin: Option<(&str, i64)>, outcome: &str) -> Decision {
    Decision {
        at,
        request_id: format!("req-{at}"),
        event: "token".into(),
        client_id: Some(client.into()),
        grant: Some("urn:ietf:params:oauth:grant-type:token-exchange".into()),
        subject: Some("(age!subject)".into()),
        actors: vec!["actor-2".into(), "actor-1".into()],
        scope: Some("read write".into()),
        audience: vec!["https://rs.example".into()],
        token_kind: Some("jwt".into()),
        jti: Some(format!("jti-{at}")),
        plugins: plugin
            .map(|(name, version)| PluginUse {
                name: name.into(),
                version,
                sha256: format!("{name}-{version}-sha"),
                outcome: "allowed".into(),
            })
            .into_iter()
            .collect(),
        outcome: outcome.into(),
        error: (outcome == "refused").then(|| "access_denied".into()),
    }
}

fn listed<S: Storage + ?Sized>(store: &S, realm: &str, query: &DecisionQuery) -> Vec<i64> {
    store.decisions(realm, query).unwrap().into_iter().map(|(_, d)| d.at).collect()
}

pub fn a_decision_is_read_back_as_recorded<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let mut bare = decision(2, "c2", None, "refused");
    bare.subject = None;
    bare.actors.clear();
    bare.audience.clear();
    let mut two = decision(1, "c1", Some(("p", 3)), "allowed");
    two.plugins.push(PluginUse { name: "q".into(), version: 1, sha256: "q-1-sha".into(), outcome: "denied".into() });
    let recorded = [("alpha".to_string(), two.clone()), ("alpha".to_string(), bare.clone())];
    assert_eq!(store.record_decisions(&recorded).unwrap(), 2);
    let read = store.decisions("alpha", &DecisionQuery::default()).unwrap();
    assert_eq!(read.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [two, bare]);
    assert!(read[0].0 < read[1].0, "ids count up");
}

pub fn decisions_are_filtered_by_client_plugin_version_outcome_and_time<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let recorded: Vec<(String, Decision)> = [
        decision(10, "c1", Some(("p", 1)), "allowed"),
        decision(20, "c2", Some(("p", 2)), "refused"),
        decision(30, "c1", Some(("p", 2)), "allowed"),
        decision(40, "c1", None, "refused"),
        decision(50, "c2", Some(("q", 1)), "allowed"),
    ]
    .into_iter()
    .map(|d| ("alpha".to_string(), d))
    .collect();
    store.record_decisions(&recorded).unwrap();
    let all = DecisionQuery::default();
    assert_eq!(listed(store, "alpha", &all), [10, 20, 30, 40, 50]);
    let by_client = DecisionQuery { client_id: Some("c1".into()), ..all.clone() };
    assert_eq!(listed(store, "alpha", &by_client), [10, 30, 40]);
    let by_plugin = DecisionQuery { plugin: Some("p".into()), ..all.clone() };
    assert_eq!(listed(store, "alpha", &by_plugin), [10, 20, 30]);
    let by_version = DecisionQuery { plugin: Some("p".into()), version: Some(2), ..all.clone() };
    assert_eq!(listed(store, "alpha", &by_version), [20, 30]);
    let by_outcome = DecisionQuery { outcome: Some("refused".into()), ..all.clone() };
    assert_eq!(listed(store, "alpha", &by_outcome), [20, 40]);
    let by_time = DecisionQuery { since: Some(20), until: Some(50), ..all.clone() };
    assert_eq!(listed(store, "alpha", &by_time), [20, 30, 40]);
    let combined =
        DecisionQuery { client_id: Some("c1".into()), plugin: Some("p".into()), since: Some(20), ..all.clone() };
    assert_eq!(listed(store, "alpha", &combined), [30]);
    assert!(listed(store, "beta", &all).is_empty(), "another realm's decisions are not listed");
}

pub fn decisions_are_read_a_page_at_a_time<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let recorded: Vec<(String, Decision)> =
        (1..=5).map(|at| ("alpha".to_string(), decision(at, "c1", None, "allowed"))).collect();
    store.record_decisions(&recorded).unwrap();
    let first = store.decisions("alpha", &DecisionQuery { limit: 2, ..DecisionQuery::default() }).unwrap();
    assert_eq!(first.iter().map(|(_, d)| d.at).collect::<Vec<_>>(), [1, 2]);
    let next = DecisionQuery { after: first[1].0, limit: 2, ..DecisionQuery::default() };
    assert_eq!(listed(store, "alpha", &next), [3, 4]);
}

pub fn a_decision_of_a_realm_that_does_not_exist_is_dropped<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let recorded = [
        ("gone".to_string(), decision(1, "c1", None, "allowed")),
        ("alpha".to_string(), decision(2, "c1", None, "allowed")),
    ];
    assert_eq!(store.record_decisions(&recorded).unwrap(), 1);
    assert_eq!(listed(store, "alpha", &DecisionQuery::default()), [2]);
    store.create_realm_if_absent("gone", "{}", 0).unwrap();
    assert!(listed(store, "gone", &DecisionQuery::default()).is_empty());
}

pub fn decisions_go_by_age_and_with_their_realm<S: Storage + ?Sized>(store: &S) {
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.create_realm_if_absent("beta", "{}", 0).unwrap();
    let recorded: Vec<(String, Decision)> = [("alpha", 10), ("alpha", 20), ("beta", 10)]
        .into_iter()
        .map(|(realm, at)| (realm.to_string(), decision(at, "c1", Some(("p", 1)), "allowed")))
        .collect();
    store.record_decisions(&recorded).unwrap();
    assert_eq!(store.sweep_decisions("alpha", 20).unwrap(), 1);
    assert_eq!(listed(store, "alpha", &DecisionQuery::default()), [20]);
    assert_eq!(listed(store, "beta", &DecisionQuery::default()), [10], "another realm keeps its own");
    // A decision like one swept away is recorded whole again.
    assert_eq!(store.sweep_decisions("beta", 100).unwrap(), 1);
    let again = [("beta".to_string(), decision(30, "c1", Some(("p", 1)), "allowed"))];
    assert_eq!(store.record_decisions(&again).unwrap(), 1);
    let read = store.decisions("beta", &DecisionQuery::default()).unwrap();
    assert_eq!(read.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), [again[0].1.clone()]);
    assert!(store.delete_realm("alpha", &audit("delete")).unwrap());
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    let by_plugin = DecisionQuery { plugin: Some("p".into()), ..DecisionQuery::default() };
    assert!(listed(store, "alpha", &by_plugin).is_empty(), "a realm made again starts with none");
}
