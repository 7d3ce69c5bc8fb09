//! The hooks a plugin can serve: one list, and one module per hook.
//!
//! Each hook module (`dcr`, `may_act`, `token`, `scope`, `authorize`,
//! `assertion`) holds everything particular to its hook: the input its
//! callers give, its conversion to the WIT types, the call, and the checks
//! of its answer, so a caller gets an answer it may use as it is. It
//! declares its WIT function and types by implementing [`Hook`].
//!
//! The list at the bottom of this file names every hook once. From it the
//! `hooks!` macro generates what has to range over all hooks: the
//! [`Pre`] a plugin keeps (its component type-checked against its world
//! at load), the [`Exports`] an instance has (its typed hook function),
//! and the dispatch from a [`HookKind`] to both. Its matches are
//! exhaustive over `HookKind`, so a hook kind missing from the list does
//! not compile.
//!
//! Adding a hook: its world in `wit/policy.wit` (which includes `host`),
//! a line in `bindings.rs`, a variant of `agentauth_core::HookKind`, a
//! module here, its line in the list, and the caller.

pub(crate) mod assertion;
pub(crate) mod authorize;
pub(crate) mod dcr;
pub(crate) mod may_act;
pub(crate) mod scope;
pub(crate) mod token;

use wasmtime::Store;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, ComponentType, Instance, InstancePre, Lift, Lower, TypedFunc,
};

use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::limits::{Limits, MAX_OUTPUT_STRING};
use crate::registry::Plugin;
use crate::state::{HostState, escape_log, truncate};
use crate::{CONTRACT_VERSION, Client, Failure, HookError, HookKind};

/// What a hook module declares about its hook's WIT world.
pub(crate) trait Hook {
    /// The function of the hook's interface, as WIT names it.
    const FUNCTION: &'static str;
    /// The world's `*Pre` from `bindings`: making one type-checks a
    /// component against the world.
    type Pre;
    /// The function's parameters.
    type Params: ComponentNamedList + Lower + Send + Sync + 'static;
    /// The function's answer when the policy decides: the `ok` of its
    /// `result<_, error>`.
    type Answer: ComponentType + Lift + Send + Sync + 'static;
}

/// A hook's function in an instance.
pub(crate) type Function<H> = TypedFunc<<H as Hook>::Params, (Result<<H as Hook>::Answer, wit_types::Error>,)>;

/// A hook of the list: its kind, and its function among an instance's
/// [`Exports`]. Implemented by `hooks!` only.
pub(crate) trait Listed: Hook + Sized {
    const KIND: HookKind;

    /// This hook's function, if `exports` are this hook's.
    fn function(exports: Exports) -> Option<Function<Self>>;
}

/// Generates, from the list of `Kind => hook type` pairs, the enums and
/// dispatch that range over every hook.
macro_rules! hooks {
    ($($kind:ident => $hook:ty,)*) => {
        /// A plugin's component, linked and type-checked against its
        /// hook's world, ready to instantiate.
        pub(crate) enum Pre {
            $($kind(<$hook as Hook>::Pre),)*
        }

        impl Pre {
            /// Type-checks `pre` against `kind`'s world.
            pub(crate) fn new(kind: HookKind, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
                Ok(match kind {
                    $(HookKind::$kind => Self::$kind(<$hook as Hook>::Pre::new(pre)?),)*
                })
            }

            pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
                match self {
                    $(Self::$kind(pre) => pre.instance_pre(),)*
                }
            }
        }

        /// The hook function of an instance.
        #[derive(Clone, Copy)]
        pub(crate) enum Exports {
            $($kind(Function<$hook>),)*
        }

        impl Exports {
            /// Looks up `kind`'s function, at `index`, in `instance`.
            fn new(
                kind: HookKind,
                instance: &Instance,
                store: &mut Store<HostState>,
                index: ComponentExportIndex,
            ) -> wasmtime::Result<Self> {
                Ok(match kind {
                    $(HookKind::$kind => Self::$kind(instance.get_typed_func(&mut *store, index)?),)*
                })
            }
        }

        /// The function of `kind`'s interface.
        fn function_name(kind: HookKind) -> &'static str {
            match kind {
                $(HookKind::$kind => <$hook as Hook>::FUNCTION,)*
            }
        }

        $(
            impl Listed for $hook {
                const KIND: HookKind = HookKind::$kind;

                fn function(exports: Exports) -> Option<Function<Self>> {
                    #[allow(unreachable_patterns)]
                    match exports {
                        Exports::$kind(function) => Some(function),
                        _ => None,
                    }
                }
            }
        )*
    };
}

// Every hook, once.
hooks! {
    Dcr => dcr::Dcr,
    MayAct => may_act::MayAct,
    Token => token::Token,
    Scope => scope::Scope,
    Authorize => authorize::Authorize,
    Assertion => assertion::Assertion,
}

/// The interface a plugin of `kind` exports, with its version.
pub fn export_name(kind: HookKind) -> String {
    format!("agentauth:policy/{}@{CONTRACT_VERSION}", kind.as_str())
}

/// Instantiates `plugin` in `store` and finds its hook function.
pub(crate) async fn instantiate(plugin: &Plugin, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
    let kind = plugin.kind();
    let instance = plugin.pre().instance_pre().instantiate_async(&mut *store).await?;
    let missing = || wasmtime::format_err!("the {} hook function is missing", kind.as_str());
    let interface = instance.get_export_index(&mut *store, None, &export_name(kind)).ok_or_else(missing)?;
    let function = instance.get_export_index(&mut *store, Some(&interface), function_name(kind)).ok_or_else(missing)?;
    Exports::new(kind, &instance, store, function)
}

impl PluginHost {
    /// Runs hook `H` of `plugin` on `params` and returns its answer as
    /// lifted, unchecked: each hook module checks it before handing it on.
    fn call<H: Listed>(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        params: H::Params,
    ) -> Result<H::Answer, HookError> {
        self.run(plugin, H::KIND, limits, realm, async move |exports, store| {
            let Some(function) = H::function(exports) else { return Ok(Err(wrong_kind(plugin, H::KIND))) };
            let (answer,) = function.call_async(&mut *store, params).await?;
            Ok(answer.map_err(|error| refusal(error, &store.data().label)))
        })
    }
}

/// The client as every hook sees it.
fn client_view(client: &Client) -> wit_types::ClientView {
    wit_types::ClientView {
        client_id: client.client_id.clone(),
        is_ai_agent: client.is_ai_agent,
        metadata: agentauth_core::registration::metadata_json(&client.metadata).to_string(),
        attributes: client
            .attributes
            .as_pairs()
            .into_iter()
            .map(|(name, values)| wit_types::Attribute { name: name.to_string(), values })
            .collect(),
    }
}

/// A plugin's own words, as the host passes them on: bounded, and with
/// control characters escaped, so they cannot forge a line of the log.
/// A refusal (`denied`) is meant for the caller; an `other` error is
/// logged, and the caller is told only that the policy failed, as the
/// contract (`wit/policy.wit`) promises.
fn refusal(error: wit_types::Error, label: &str) -> HookError {
    match error {
        wit_types::Error::Denied(why) => HookError::Denied(escape_log(truncate(&why, MAX_OUTPUT_STRING)).into_owned()),
        wit_types::Error::Other(why) => {
            let why = escape_log(truncate(&why, MAX_OUTPUT_STRING));
            tracing::warn!(plugin = label, "the plugin reported an error: {why}");
            HookError::Failed(Failure::Error, "the plugin reported an error (its text is in the server log)".into())
        }
    }
}

pub(crate) fn wrong_kind(plugin: &Plugin, kind: HookKind) -> HookError {
    HookError::Failed(Failure::Error, format!("plugin {} is not a {} plugin", plugin.name(), kind.as_str()))
}

/// An answer the host cannot use: the call failed, and says why.
fn invalid_answer(why: impl std::fmt::Display) -> HookError {
    HookError::Failed(Failure::InvalidAnswer, format!("invalid answer: {why}"))
}
