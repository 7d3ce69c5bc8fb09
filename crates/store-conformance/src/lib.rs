//! The conformance suite of agentauth's storage ports: the contract of
//! every repository trait of `agentauth_core::ports`, written once as
//! tests, which every backend runs.
//!
//! A backend runs the suite with one macro call in its tests, giving a
//! function that hands each test a fresh, empty store (and cleans up
//! after it):
//!
//! ```ignore
//! fn with_store(test: impl FnOnce(&MyStore)) {
//!     test(&MyStore::open_in_memory().expect("a store"));
//! }
//!
//! agentauth_store_conformance::store_conformance_tests!(with_store);
//! ```
//!
//! Each test is a generic function here, named as the rule it checks, that
//! uses the store only through the traits ([`Storage`]); the macro makes
//! one `#[test]` of each. A second backend is then one implementation and
//! one macro call.
//!
//! This crate depends on core only: it must not know any backend.
//!
//! [`Storage`]: agentauth_core::ports::Storage

// Every function here is a test: a panic is a failure with its location.
#![allow(clippy::unwrap_used)]

pub mod audit;
pub mod authorizations;
pub mod clients;
pub mod coordination;
pub mod decisions;
pub mod fixtures;
pub mod keys;
pub mod plugins;
pub mod realms;
pub mod secrets;
pub mod tokens;
pub mod users;

/// One `#[test]` per rule of the storage ports, each run on the store
/// that `$with_store` (a function taking `impl FnOnce(&Store)`) provides.
#[macro_export]
macro_rules! store_conformance_tests {
    ($with_store:expr) => {
        $crate::__conformance_tests! { $with_store =>
            realms::a_realm_is_created_once_and_listed_by_name,
            realms::a_realms_settings_are_replaced_whole,
            realms::a_realm_admin_is_found_by_its_token_hash_until_removed,
            realms::a_realm_admin_of_no_realm_is_refused,
            realms::deleting_a_realm_takes_everything_of_it_and_nothing_of_another,
            clients::a_client_is_read_as_stored_in_its_realm_only,
            clients::a_clients_application_type_and_allowed_audiences_read_back_as_stored,
            clients::a_client_read_after_its_update_or_deletion_is_current,
            clients::updating_a_client_keeps_its_secret,
            clients::a_spent_registration_token_neither_updates_nor_deletes,
            clients::racing_registrations_never_pass_the_realms_client_cap,
            clients::deleting_a_client_deletes_its_tokens_only,
            clients::disabling_a_client_ends_its_tokens_for_good_and_is_audited,
            clients::clients_are_listed_by_id_a_page_at_a_time_and_removed_without_their_token,
            clients::clients_are_filtered_by_state_kind_last_use_and_expiry,
            clients::a_taken_client_id_is_refused,
            clients::a_client_of_an_unknown_realm_is_refused,
            keys::the_first_key_stored_is_the_one_every_caller_gets,
            keys::a_rotated_key_comes_first_and_the_keys_before_it_are_scheduled_out,
            keys::a_key_past_its_retirement_is_swept,
            plugins::plugin_versions_count_up_and_the_newest_is_active,
            plugins::pushes_activations_and_deletions_are_audited_in_the_same_commit,
            plugins::activating_an_earlier_version_rolls_the_plugin_back,
            plugins::a_plugin_name_keeps_its_hook_kind,
            plugins::a_push_past_the_quota_stores_neither_the_version_nor_its_artifact,
            plugins::a_deleted_version_takes_its_artifact_unless_stored_bytes_still_use_it,
            plugins::an_artifact_is_kept_for_one_engine_at_a_time,
            plugins::a_sweep_drops_artifacts_no_stored_version_uses,
            tokens::a_token_is_found_only_in_its_realm_of_its_kind_before_it_expires,
            tokens::live_tokens_are_counted_per_client_in_their_realm,
            tokens::rotating_a_refresh_token_twice_reports_reuse,
            tokens::racing_rotations_of_one_refresh_token_rotate_it_once,
            tokens::reusing_a_refresh_token_revokes_its_whole_family,
            tokens::a_rotation_stores_each_successor_with_the_grant_it_was_given,
            tokens::only_a_live_refresh_token_of_the_realm_rotates,
            tokens::revoking_a_family_revokes_every_family_derived_from_it,
            tokens::revoking_a_jwt_revokes_the_families_derived_from_it,
            tokens::deleting_a_client_revokes_the_families_derived_from_its_tokens,
            tokens::a_family_derived_from_a_revoked_token_is_refused,
            tokens::an_assertion_jti_is_used_once,
            tokens::a_sweep_removes_only_what_has_expired,
            audit::audited_changes_are_listed_in_order_a_page_at_a_time,
            audit::a_new_realm_of_a_deleted_realms_name_starts_its_own_audit_log,
            audit::event_delivery_cursors_only_move_forward_per_receiver_and_go_with_the_realm,
            secrets::a_server_secret_is_made_once_even_by_racing_callers,
            coordination::every_change_a_replica_acts_on_is_recorded_in_commit_order,
            coordination::writes_nobody_caches_record_no_change,
            coordination::changes_are_read_a_page_at_a_time,
            coordination::changes_are_swept_once_no_follower_can_need_them,
            coordination::a_lease_has_one_holder_until_it_runs_out,
            coordination::racing_holders_agree_on_one,
            coordination::a_database_that_answers_pings,
            decisions::a_decision_is_read_back_as_recorded,
            decisions::decisions_are_filtered_by_client_plugin_version_outcome_and_time,
            decisions::decisions_are_read_a_page_at_a_time,
            decisions::a_decision_of_a_realm_that_does_not_exist_is_dropped,
            decisions::decisions_go_by_age_and_with_their_realm,
            users::a_user_is_read_back_as_stored_in_its_realm_only,
            users::a_taken_username_is_refused_and_stores_nothing,
            users::a_user_of_an_unknown_realm_is_refused,
            users::racing_creations_of_one_username_store_one_user,
            users::users_are_listed_by_username_a_page_at_a_time,
            users::a_users_state_and_password_change_and_are_audited,
            users::a_deleted_user_is_gone_and_its_username_free_again,
            users::deleting_a_realm_deletes_its_users,
            authorizations::a_code_is_read_back_as_stored_in_its_realm_only_until_it_expires,
            authorizations::a_taken_hash_or_an_unknown_realm_client_or_user_is_refused,
            authorizations::a_code_is_redeemed_once_and_every_later_redemption_answers_what_the_first_issued,
            authorizations::racing_redemptions_of_one_code_redeem_it_once,
            authorizations::a_sweep_deletes_the_codes_expired_by_then_used_or_not,
            authorizations::a_used_code_is_kept_while_its_family_lives_and_names_it_for_its_user_and_client,
            authorizations::a_consent_is_kept_per_user_and_client_replaced_whole_and_revoked,
            authorizations::deleting_a_realm_deletes_its_codes_and_consents,
            authorizations::deleting_a_user_deletes_its_codes_and_consents,
            authorizations::deleting_a_client_deletes_its_codes_and_consents,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($with_store:expr => $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                ($with_store)(|store| $crate::$module::$test(store));
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    /// Each module's source, to check the macro against.
    const MODULES: [(&str, &str); 11] = [
        ("realms", include_str!("realms.rs")),
        ("clients", include_str!("clients.rs")),
        ("keys", include_str!("keys.rs")),
        ("plugins", include_str!("plugins.rs")),
        ("tokens", include_str!("tokens.rs")),
        ("audit", include_str!("audit.rs")),
        ("secrets", include_str!("secrets.rs")),
        ("coordination", include_str!("coordination.rs")),
        ("decisions", include_str!("decisions.rs")),
        ("users", include_str!("users.rs")),
        ("authorizations", include_str!("authorizations.rs")),
    ];

    #[test]
    fn every_test_written_is_one_the_macro_runs_and_no_other() {
        let mut written: Vec<String> = MODULES
            .iter()
            .flat_map(|(module, source)| {
                let names = source.lines().filter_map(|l| l.strip_prefix("pub fn ")?.split('<').next());
                names.map(move |name| format!("{module}::{name},"))
            })
            .collect();
        let mut listed: Vec<String> = include_str!("lib.rs")
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with(',') && MODULES.iter().any(|(m, _)| l.starts_with(&format!("{m}::"))))
            .map(String::from)
            .collect();
        written.sort();
        listed.sort();
        assert!(!written.is_empty());
        assert_eq!(written, listed);
    }
}
