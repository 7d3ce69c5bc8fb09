//! The hook points a tenant's policy can serve.
//!
//! One list, shared by the realm settings, the store, the plugin host, the
//! CLI and the admin API: a hook kind is named the same everywhere, and a
//! new hook starts as one row here.

use crate::vocabulary::vocabulary;

vocabulary! {
    /// The hook point a plugin serves, named as its WIT world's interface
    /// and in the admin API.
    #[derive(PartialOrd, Ord)]
    pub enum HookKind {
        /// Dynamic client registration (`dcr`): approves, amends or refuses
        /// a registration.
        Dcr = "dcr",
        /// The `may_act` claim of an access token (`may-act`), chosen per
        /// client by its `accessTokenMayActScript` attribute.
        MayAct = "may-act",
        /// Custom claims of access tokens (`token`).
        Token = "token",
        /// Narrowing or refusing requested scopes (`scope`).
        Scope = "scope",
        /// Narrowing, refusing or delegating what a user authorizes a
        /// client to do at the authorization endpoint (`authorize`).
        Authorize = "authorize",
        /// What a verified token from an issuer outside the realm means
        /// here: its local subject, narrowed scopes and `may_act`, or a
        /// refusal (`assertion`).
        Assertion = "assertion",
    }
}

impl HookKind {
    /// Whether a realm selects one plugin for this hook in its settings;
    /// otherwise each client names its own (the may-act hook).
    pub fn is_realm_wide(self) -> bool {
        !matches!(self, Self::MayAct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_kind_parses_from_its_own_name() {
        crate::vocabulary::assert_table(&HookKind::ALL, HookKind::as_str, HookKind::parse);
        assert_eq!(HookKind::parse("Dcr"), None);
    }
}
