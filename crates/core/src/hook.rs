//! The hook points a tenant's policy can serve.
//!
//! One list, shared by the realm settings, the store, the plugin host, the
//! CLI and the admin API: a hook kind is named the same everywhere, and a
//! new hook starts as one variant here.

/// The hook point a plugin serves, named as its WIT world's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookKind {
    /// Dynamic client registration (`dcr`): approves, amends or refuses
    /// a registration.
    Dcr,
    /// The `may_act` claim of an access token (`may-act`), chosen per
    /// client by its `accessTokenMayActScript` attribute.
    MayAct,
    /// Custom claims of access tokens (`token`).
    Token,
    /// Narrowing or refusing requested scopes (`scope`).
    Scope,
}

impl HookKind {
    /// Every hook kind.
    pub const ALL: [HookKind; 4] = [HookKind::Dcr, HookKind::MayAct, HookKind::Token, HookKind::Scope];

    /// The name of the hook, as in the WIT interface and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dcr => "dcr",
            Self::MayAct => "may-act",
            Self::Token => "token",
            Self::Scope => "scope",
        }
    }

    /// The hook named `name`, as [`HookKind::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether a realm selects one plugin for this hook in its settings;
    /// otherwise each client names its own (the may-act hook).
    pub fn is_realm_wide(self) -> bool {
        !matches!(self, Self::MayAct)
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_kind_parses_from_its_own_name() {
        for kind in HookKind::ALL {
            assert_eq!(HookKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(HookKind::parse("Dcr"), None);
        assert_eq!(HookKind::parse(""), None);
    }
}
