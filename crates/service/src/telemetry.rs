//! Metrics: one registry for the whole server, encoded in the Prometheus
//! text format for `GET /metrics`.
//!
//! The service owns the registry ([`Metrics`]). The other layers reach it
//! through narrow hooks and never name the metrics crate: the store tells
//! of its commits through core's `CommitObserver`, the plugin host of its
//! compilations through its `CompileObserver`, and the edge records what
//! it sees through the handles below.
//!
//! Label values are bounded. A `realm` label names a realm only once the
//! realm is known to exist: a realm's handles are made when its runtime is
//! built ([`RealmMetrics`], kept in the runtime, each finding its series
//! on first use, so that counting on the hot path is an atomic add on a
//! handle found once, never a label built per request), and its series are
//! removed when the realm is deleted. What concerns no existing realm is
//! labelled [`NO_REALM`]. Plugins are labelled by name and version only
//! while that version is active in its realm. Clients, tokens and request
//! ids are never labels; nothing secret ever is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use agentauth_core::{AuthMethod, ErrorCode, GrantType};
use agentauth_plugin_host::Failure;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `realm` label of what concerns no realm, or a realm that does not
/// exist: such requests never make a series of their own.
pub const NO_REALM: &str = "-";

type Label = Cow<'static, str>;
type Labels<const N: usize> = [(&'static str, Label); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Request latency buckets, in seconds: a JWT from 50 µs, an fsync in
/// milliseconds, a slow plugin in tenths.
const REQUEST_SECONDS: [f64; 17] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Plugin call latency buckets, in seconds: a warm call takes tens of
/// microseconds; the default timeout is 100 ms.
const PLUGIN_SECONDS: [f64; 16] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Compilation buckets, in seconds: a small Rust policy compiles in tens
/// of milliseconds, a Python one in several seconds.
const COMPILE_SECONDS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Commit latency buckets, in seconds: an fsync.
const COMMIT_SECONDS: [f64; 13] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Writes one commit carries.
const COMMIT_WRITES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_SECONDS)
}

fn plugin_histogram() -> Histogram {
    Histogram::new(PLUGIN_SECONDS)
}

/// The label value of a grant: its short name, not its URN.
fn grant_label(grant: GrantType) -> &'static str {
    match grant {
        GrantType::ClientCredentials => "client_credentials",
        GrantType::TokenExchange => "token_exchange",
        GrantType::RefreshToken => "refresh_token",
        GrantType::AuthorizationCode => "authorization_code",
        GrantType::JwtBearer => "jwt_bearer",
    }
}

/// Declares a label's values as an enum: `ALL`, `as_str`, and `index`
/// (its place in `ALL`), so realms keep one handle per value in an array.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$row:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$row])* $variant,)+
        }

        impl $name {
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            #[allow(dead_code)] // not every label is kept in an array
            const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_values! {
    /// What kind of token was issued.
    pub enum IssuedKind {
        /// A signed access token (RFC 9068).
        Jwt = "jwt",
        /// An opaque access token, kept server-side by hash.
        Opaque = "opaque",
        Refresh = "refresh",
    }
}

label_values! {
    /// How a token exchange ended.
    pub enum ExchangeOutcome {
        Issued = "issued",
        /// The subject token is invalid, expired, revoked or not an access
        /// token of the realm.
        InvalidSubject = "invalid_subject",
        /// The actor token is.
        InvalidActor = "invalid_actor",
        /// The audience or resource is not one the client may ask for.
        InvalidTarget = "invalid_target",
        /// The exchange rules refused it: may_act, scope, delegation depth.
        Refused = "refused",
        /// A policy of the realm refused it.
        Denied = "denied",
        /// The server failed: a failing policy, a busy database.
        Failed = "failed",
    }
}

label_values! {
    /// Where a client registered or managed its registration.
    pub enum RegistrationEndpoint {
        /// RFC 7591 at `register`.
        Register = "register",
        /// An AI agent at `aiagent/register`.
        AiAgentRegister = "aiagent/register",
        /// RFC 7592 PUT.
        Update = "update",
        /// RFC 7592 DELETE.
        Delete = "delete",
    }
}

label_values! {
    /// How a registration operation ended.
    pub enum RegistrationOutcome {
        /// Created, updated or deleted, as the endpoint does.
        Done = "done",
        /// Refused: the request, the realm's limits or its policy.
        Refused = "refused",
        /// The server failed (a 5xx).
        Failed = "failed",
    }
}

impl RegistrationEndpoint {
    /// The outcome label of `outcome` here: `created`, `updated` or
    /// `deleted` for what the endpoint does.
    fn outcome_label(self, outcome: RegistrationOutcome) -> &'static str {
        match (outcome, self) {
            (RegistrationOutcome::Done, Self::Register | Self::AiAgentRegister) => "created",
            (RegistrationOutcome::Done, Self::Update) => "updated",
            (RegistrationOutcome::Done, Self::Delete) => "deleted",
            (other, _) => other.as_str(),
        }
    }
}

label_values! {
    /// The endpoints whose latency is measured.
    pub enum Endpoint {
        Token = "token",
        /// Both registration endpoints.
        Register = "register",
        /// RFC 7592 client configuration.
        Manage = "manage",
        Introspect = "introspect",
        Revoke = "revoke",
        Jwks = "jwks",
        Discovery = "discovery",
        /// The authorization endpoint, its pages and forms.
        Authorize = "authorize",
        /// The admin API, server-wide: under [`NO_REALM`].
        Admin = "admin",
        /// A user's own agents.
        Agents = "agents",
    }
}

label_values! {
    /// Why a plugin call produced no usable answer.
    pub enum PluginFailure {
        Timeout = "timeout",
        Memory = "memory",
        Trap = "trap",
        InvalidAnswer = "invalid_answer",
        /// The plugin reported an error of its own, or could not run.
        Error = "error",
        /// The policy refused.
        Denied = "denied",
        /// The call found no room to run before its deadline.
        Busy = "busy",
    }
}

impl From<Failure> for PluginFailure {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Timeout => Self::Timeout,
            Failure::Memory => Self::Memory,
            Failure::Trap => Self::Trap,
            Failure::InvalidAnswer => Self::InvalidAnswer,
            Failure::Error => Self::Error,
        }
    }
}

label_values! {
    /// The limits whose refusals are counted.
    pub enum RateLimit {
        /// A realm's registrations per minute, in all or per source.
        Registrations = "registrations",
        /// Plugin uploads: a realm's per minute, and those in flight.
        Admin = "admin",
        /// A realm's key rotations per minute, and its published keys.
        KeyRotations = "key_rotations",
        /// A realm's login attempts per minute, per username or per source.
        Logins = "logins",
        /// Connections from one source (server-wide, under [`NO_REALM`]).
        ConnectionsPerSource = "connections_per_source",
    }
}

label_values! {
    /// Why a signing key was rotated.
    pub enum Rotation {
        /// By the housekeeping schedule (`key_rotation_days`).
        Scheduled = "scheduled",
        /// Through the admin API.
        Requested = "requested",
    }
}

/// What a client may authenticate with: nothing, then each method.
fn auth_methods() -> [Option<AuthMethod>; AuthMethod::ALL.len() + 1] {
    std::array::from_fn(|i| i.checked_sub(1).map(|i| AuthMethod::ALL[i]))
}

/// The label value of a client authentication method; `none` when the
/// request tried none.
fn method_label(method: Option<AuthMethod>) -> &'static str {
    method.map_or("none", AuthMethod::as_str)
}

/// The families whose series are a realm's, shared by the registry (which
/// encodes them) and every realm's handles (clones: each counts into the
/// same atomics).
#[derive(Clone, Debug)]
struct Families {
    tokens_issued: Family<Labels<3>, Counter>,
    exchanges: Family<Labels<2>, Counter>,
    registrations: Family<Labels<3>, Counter>,
    auth_failures: Family<Labels<2>, Counter>,
    oauth_errors: Family<Labels<2>, Counter>,
    requests: Histograms<2>,
    plugin_calls: Histograms<3>,
    /// Each plugin version's calls and their total time in microseconds,
    /// which a histogram does not tell back: for the admin API, not
    /// exported (the histogram carries both).
    plugin_totals: Family<Labels<3>, CallTotals>,
    plugin_failures: Family<Labels<4>, Counter>,
    key_rotations: Family<Labels<2>, Counter>,
    signing_key_created: Family<Labels<1>, Gauge>,
    rate_limited: Family<Labels<2>, Counter>,
}

/// The server's metrics: the registry, and every handle.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Families,
    compilations: Family<Labels<1>, Counter>,
    compile_seconds: Histogram,
    commit_seconds: Histogram,
    commit_writes: Histogram,
    open_connections: Gauge,
    /// Latency of requests that name no existing realm, per endpoint.
    without_realm: [Histogram; Endpoint::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, with none of a realm yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agentauth");
        let tokens_issued = Family::default();
        registry.register(
            "tokens_issued",
            "Tokens issued, by realm, grant (client_credentials, token_exchange, refresh_token) and kind (jwt, opaque, refresh)",
            tokens_issued.clone(),
        );
        let exchanges = Family::default();
        registry.register(
            "token_exchanges",
            "Token exchanges, by realm and outcome (issued; invalid_subject, invalid_actor, invalid_target, refused by the exchange rules, denied by a policy; failed)",
            exchanges.clone(),
        );
        let registrations = Family::default();
        registry.register(
            "registrations",
            "Registration operations, by realm, endpoint (register, aiagent/register, update, delete) and outcome (created, updated, deleted; refused; failed)",
            registrations.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "client_authentication_failures",
            "Failed client authentications at the token, introspection and revocation endpoints, by realm and method (client_secret_basic, client_secret_post, private_key_jwt, none)",
            auth_failures.clone(),
        );
        let oauth_errors = Family::default();
        registry.register(
            "oauth_errors",
            "OAuth error responses of the realm endpoints, by realm and error code",
            oauth_errors.clone(),
        );
        let requests: Histograms<2> = Family::new_with_constructor(request_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response, by realm (\"-\" for none or the admin API) and endpoint",
            requests.clone(),
        );
        let plugin_calls: Histograms<3> = Family::new_with_constructor(plugin_histogram);
        registry.register(
            "plugin_call_duration_seconds",
            "Time of one plugin call, waits included, by realm, plugin and version",
            plugin_calls.clone(),
        );
        let plugin_failures = Family::default();
        registry.register(
            "plugin_failures",
            "Plugin calls without a usable answer, by realm, plugin, version and cause (timeout, memory, trap, invalid_answer, error, denied, busy)",
            plugin_failures.clone(),
        );
        let compilations = Family::default();
        registry.register(
            "plugin_compilations",
            "Plugin compilations, by outcome (compiled, failed); a precompiled artifact loaded is none",
            compilations.clone(),
        );
        let compile_seconds = Histogram::new(COMPILE_SECONDS);
        registry.register(
            "plugin_compile_duration_seconds",
            "Time of one plugin compilation, its wait for a turn not counted",
            compile_seconds.clone(),
        );
        let commit_seconds = Histogram::new(COMMIT_SECONDS);
        registry.register(
            "store_commit_duration_seconds",
            "Time of one commit of the store (SQLite: COMMIT and its fsync; PostgreSQL: the commit's round trip)",
            commit_seconds.clone(),
        );
        let commit_writes = Histogram::new(COMMIT_WRITES);
        registry.register(
            "store_commit_writes",
            "Writes one commit carried (SQLite's group commit; always 1 on PostgreSQL)",
            commit_writes.clone(),
        );
        let key_rotations = Family::default();
        registry.register(
            "key_rotations",
            "Signing key rotations, by realm and trigger (scheduled, requested)",
            key_rotations.clone(),
        );
        let signing_key_created = Family::default();
        registry.register(
            "signing_key_created_timestamp_seconds",
            "When the key that signs a realm's tokens was made (Unix time), for realms this process has loaded",
            signing_key_created.clone(),
        );
        let open_connections = Gauge::default();
        registry.register("open_connections", "Connections open on the main listener", open_connections.clone());
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests refused by a limit, by realm (\"-\" for server-wide limits) and limit (registrations, admin, key_rotations, logins, connections_per_source)",
            rate_limited.clone(),
        );
        let without_realm = Endpoint::ALL
            .map(|endpoint| requests.get_or_create_owned(&[realm_label(NO_REALM), endpoint_label(endpoint)]));
        for outcome in ["compiled", "failed"] {
            compilations.get_or_create_owned(&[("outcome", Cow::Borrowed(outcome))]);
        }
        for limit in [RateLimit::Admin, RateLimit::ConnectionsPerSource] {
            rate_limited.get_or_create_owned(&[realm_label(NO_REALM), limit_label(limit)]);
        }
        let families = Families {
            tokens_issued,
            exchanges,
            registrations,
            auth_failures,
            oauth_errors,
            requests,
            plugin_calls,
            plugin_totals: Family::default(),
            plugin_failures,
            key_rotations,
            signing_key_created,
            rate_limited,
        };
        Self {
            registry,
            families,
            compilations,
            compile_seconds,
            commit_seconds,
            commit_writes,
            open_connections,
            without_realm,
        }
    }

    /// Every metric in the Prometheus text format (version 0.0.4), whose
    /// `Content-Type` is [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!("encoding the metrics: {e}");
        }
        text
    }

    /// The handles of realm `realm` running `plugins` (name and version):
    /// call only for a realm that exists. A series is made on its first
    /// count, so a realm shows only what it did (and its plugins' call
    /// latency, and its signing key's age, from the start).
    pub(crate) fn realm<'a>(&self, realm: &str, plugins: impl IntoIterator<Item = (&'a str, i64)>) -> RealmMetrics {
        let signing_key_created = self.families.signing_key_created.get_or_create_owned(&[realm_label_owned(realm)]);
        let plugins = plugins
            .into_iter()
            .map(|(plugin, version)| (plugin.to_string(), self.plugin(realm, plugin, version)))
            .collect();
        RealmMetrics {
            realm: realm.to_string(),
            families: self.families.clone(),
            tokens_issued: Default::default(),
            exchanges: Default::default(),
            registrations: Default::default(),
            auth_failures: Default::default(),
            oauth_errors: Default::default(),
            requests: Default::default(),
            registrations_limited: OnceLock::new(),
            signing_key_created,
            plugins,
        }
    }

    /// The handles of version `version` of plugin `plugin` in `realm`.
    fn plugin(&self, realm: &str, plugin: &str, version: i64) -> PluginMetrics {
        let labels = plugin_labels(realm, plugin, version);
        let calls = self.families.plugin_calls.get_or_create_owned(&labels);
        let totals = self.families.plugin_totals.get_or_create_owned(&labels);
        PluginMetrics {
            version,
            labels,
            family: self.families.plugin_failures.clone(),
            calls,
            totals,
            failures: Default::default(),
        }
    }

    /// Removes the series of the plugin versions that `before` ran and
    /// `after` does not: a version no longer active leaves the metrics.
    pub(crate) fn forget_plugins(&self, before: &RealmMetrics, after: Option<&RealmMetrics>) {
        for (plugin, version) in before.plugin_versions() {
            if after.is_some_and(|after| after.plugin_versions().any(|p| p == (plugin, version))) {
                continue;
            }
            let labels = plugin_labels(&before.realm, plugin, version);
            self.families.plugin_calls.remove(&labels);
            self.families.plugin_totals.remove(&labels);
            for cause in PluginFailure::ALL {
                self.families.plugin_failures.remove(&with_cause(&labels, cause));
            }
        }
    }

    /// Removes every series of a deleted realm; `last` is its runtime's
    /// handles, if it was loaded, whose plugins leave too.
    pub(crate) fn forget_realm(&self, realm: &str, last: Option<&RealmMetrics>) {
        if let Some(last) = last {
            self.forget_plugins(last, None);
        }
        let name = || realm_label_owned(realm);
        for grant in GrantType::ALL {
            for kind in IssuedKind::ALL {
                self.families.tokens_issued.remove(&[
                    name(),
                    ("grant", Cow::Borrowed(grant_label(grant))),
                    ("kind", Cow::Borrowed(kind.as_str())),
                ]);
            }
        }
        for outcome in ExchangeOutcome::ALL {
            self.families.exchanges.remove(&[name(), ("outcome", Cow::Borrowed(outcome.as_str()))]);
        }
        for endpoint in RegistrationEndpoint::ALL {
            for outcome in RegistrationOutcome::ALL {
                self.families.registrations.remove(&[
                    name(),
                    ("endpoint", Cow::Borrowed(endpoint.as_str())),
                    ("outcome", Cow::Borrowed(endpoint.outcome_label(outcome))),
                ]);
            }
        }
        for method in auth_methods() {
            self.families.auth_failures.remove(&[name(), ("method", Cow::Borrowed(method_label(method)))]);
        }
        for code in ErrorCode::ALL {
            self.families.oauth_errors.remove(&[name(), ("error", Cow::Borrowed(code.as_str()))]);
        }
        for endpoint in Endpoint::ALL {
            self.families.requests.remove(&[name(), endpoint_label(endpoint)]);
        }
        for limit in RateLimit::ALL {
            self.families.rate_limited.remove(&[name(), limit_label(limit)]);
        }
        for trigger in Rotation::ALL {
            self.families.key_rotations.remove(&[name(), ("trigger", Cow::Borrowed(trigger.as_str()))]);
        }
        self.families.signing_key_created.remove(&[name()]);
    }

    /// A request that named no existing realm (or an admin request) took
    /// `elapsed`.
    pub fn request_without_realm(&self, endpoint: Endpoint, elapsed: Duration) {
        self.without_realm[endpoint.index()].observe(elapsed.as_secs_f64());
    }

    /// A connection opened on the main listener.
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// A connection of the main listener closed.
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// A request was refused by a server-wide limit, or by a limit of a
    /// realm that may not exist.
    pub fn rate_limited_without_realm(&self, limit: RateLimit) {
        self.families.rate_limited.get_or_create(&[realm_label(NO_REALM), limit_label(limit)]).inc();
    }

    /// A request to existing realm `realm` was refused by `limit`. Off the
    /// hot path: it finds the series by its labels.
    pub(crate) fn rate_limited(&self, realm: &str, limit: RateLimit) {
        self.families.rate_limited.get_or_create(&[realm_label_owned(realm), limit_label(limit)]).inc();
    }

    /// Existing realm `realm`'s signing key was rotated.
    pub(crate) fn key_rotated(&self, realm: &str, trigger: Rotation) {
        self.families
            .key_rotations
            .get_or_create(&[realm_label_owned(realm), ("trigger", Cow::Borrowed(trigger.as_str()))])
            .inc();
    }
}

impl agentauth_core::ports::CommitObserver for Metrics {
    fn committed(&self, elapsed: Duration, writes: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // a batch is far below 2^52 writes
        self.commit_writes.observe(writes as f64);
    }
}

impl agentauth_plugin_host::CompileObserver for Metrics {
    fn compiled(&self, elapsed: Duration, succeeded: bool) {
        let outcome = if succeeded { "compiled" } else { "failed" };
        self.compilations.get_or_create(&[("outcome", Cow::Borrowed(outcome))]).inc();
        self.compile_seconds.observe(elapsed.as_secs_f64());
    }
}

/// The labels of version `version` of plugin `plugin` in `realm`.
fn plugin_labels(realm: &str, plugin: &str, version: i64) -> Labels<3> {
    [realm_label_owned(realm), ("plugin", Cow::Owned(plugin.to_string())), ("version", Cow::Owned(version.to_string()))]
}

/// `labels` of a plugin version, with a failure's cause.
fn with_cause(labels: &Labels<3>, cause: PluginFailure) -> Labels<4> {
    let [realm, plugin, version] = labels.clone();
    [realm, plugin, version, ("cause", Cow::Borrowed(cause.as_str()))]
}

fn realm_label(realm: &'static str) -> (&'static str, Label) {
    ("realm", Cow::Borrowed(realm))
}

fn realm_label_owned(realm: &str) -> (&'static str, Label) {
    ("realm", Cow::Owned(realm.to_string()))
}

fn endpoint_label(endpoint: Endpoint) -> (&'static str, Label) {
    ("endpoint", Cow::Borrowed(endpoint.as_str()))
}

fn limit_label(limit: RateLimit) -> (&'static str, Label) {
    ("limit", Cow::Borrowed(limit.as_str()))
}

/// One realm's handles, kept in its runtime. Each is found in its family
/// on its first use and kept: recording after that is an atomic add (or a
/// histogram's short lock), with no label made and nothing allocated.
#[derive(Debug)]
pub struct RealmMetrics {
    realm: String,
    families: Families,
    tokens_issued: [[OnceLock<Counter>; IssuedKind::ALL.len()]; GrantType::ALL.len()],
    exchanges: [OnceLock<Counter>; ExchangeOutcome::ALL.len()],
    registrations: [[OnceLock<Counter>; RegistrationOutcome::ALL.len()]; RegistrationEndpoint::ALL.len()],
    /// `none`, then each of `AuthMethod::ALL`.
    auth_failures: [OnceLock<Counter>; AuthMethod::ALL.len() + 1],
    oauth_errors: [OnceLock<Counter>; ErrorCode::ALL.len()],
    requests: [OnceLock<Histogram>; Endpoint::ALL.len()],
    /// Registrations refused by the realm's rates.
    registrations_limited: OnceLock<Counter>,
    signing_key_created: Gauge,
    /// By plugin name: the realm runs one version of each.
    plugins: HashMap<String, PluginMetrics>,
}

impl RealmMetrics {
    fn realm_label(&self) -> (&'static str, Label) {
        realm_label_owned(&self.realm)
    }

    /// A token of `kind` was issued by `grant`.
    pub fn token_issued(&self, grant: GrantType, kind: IssuedKind) {
        let index = GrantType::ALL.iter().position(|g| *g == grant).unwrap_or(0);
        self.tokens_issued[index][kind.index()]
            .get_or_init(|| {
                self.families.tokens_issued.get_or_create_owned(&[
                    self.realm_label(),
                    ("grant", Cow::Borrowed(grant_label(grant))),
                    ("kind", Cow::Borrowed(kind.as_str())),
                ])
            })
            .inc();
    }

    /// A token exchange ended with `outcome`.
    pub fn exchange(&self, outcome: ExchangeOutcome) {
        self.exchanges[outcome.index()]
            .get_or_init(|| {
                self.families
                    .exchanges
                    .get_or_create_owned(&[self.realm_label(), ("outcome", Cow::Borrowed(outcome.as_str()))])
            })
            .inc();
    }

    /// A registration operation at `endpoint` ended with `outcome`.
    pub fn registration(&self, endpoint: RegistrationEndpoint, outcome: RegistrationOutcome) {
        self.registrations[endpoint.index()][outcome.index()]
            .get_or_init(|| {
                self.families.registrations.get_or_create_owned(&[
                    self.realm_label(),
                    ("endpoint", Cow::Borrowed(endpoint.as_str())),
                    ("outcome", Cow::Borrowed(endpoint.outcome_label(outcome))),
                ])
            })
            .inc();
    }

    /// A client failed to authenticate by `method` (`None`: it tried none).
    pub fn client_authentication_failed(&self, method: Option<AuthMethod>) {
        let index = method.and_then(|m| AuthMethod::ALL.iter().position(|a| *a == m)).map_or(0, |i| i + 1);
        self.auth_failures[index]
            .get_or_init(|| {
                self.families
                    .auth_failures
                    .get_or_create_owned(&[self.realm_label(), ("method", Cow::Borrowed(method_label(method)))])
            })
            .inc();
    }

    /// A realm endpoint answered the OAuth error `code`.
    pub fn oauth_error(&self, code: ErrorCode) {
        self.oauth_errors[code.index()]
            .get_or_init(|| {
                self.families
                    .oauth_errors
                    .get_or_create_owned(&[self.realm_label(), ("error", Cow::Borrowed(code.as_str()))])
            })
            .inc();
    }

    /// A request to `endpoint` of the realm took `elapsed`.
    pub fn request(&self, endpoint: Endpoint, elapsed: Duration) {
        self.requests[endpoint.index()]
            .get_or_init(|| self.families.requests.get_or_create_owned(&[self.realm_label(), endpoint_label(endpoint)]))
            .observe(elapsed.as_secs_f64());
    }

    /// A registration was refused by the realm's rates.
    pub fn registrations_rate_limited(&self) {
        self.registrations_limited
            .get_or_init(|| {
                self.families
                    .rate_limited
                    .get_or_create_owned(&[self.realm_label(), limit_label(RateLimit::Registrations)])
            })
            .inc();
    }

    /// The key signing the realm's tokens was made at `created_at`.
    pub(crate) fn signing_key_created(&self, created_at: i64) {
        self.signing_key_created.set(created_at);
    }

    /// The handles of the realm's plugin `name`, if it runs one.
    pub fn plugin(&self, name: &str) -> Option<&PluginMetrics> {
        self.plugins.get(name)
    }

    fn plugin_versions(&self) -> impl Iterator<Item = (&str, i64)> {
        self.plugins.iter().map(|(name, metrics)| (name.as_str(), metrics.version))
    }

    /// What this process has seen of version `version` of plugin `name`,
    /// if the realm runs it here (counts start when the version was first
    /// loaded in this process, and each replica has its own).
    pub fn plugin_stats(&self, name: &str, version: i64) -> Option<PluginStats> {
        let metrics = self.plugins.get(name).filter(|m| m.version == version)?;
        let failures = PluginFailure::ALL
            .into_iter()
            .filter_map(|cause| {
                let count = metrics.family.get(&with_cause(&metrics.labels, cause)).map(|c| c.get())?;
                (count > 0).then(|| (cause.as_str(), count))
            })
            .collect();
        let (calls, micros) = (metrics.totals.calls.get(), metrics.totals.micros.get());
        Some(PluginStats { calls, seconds: micros as f64 / 1e6, failures })
    }
}

/// Calls of one plugin version, as a process counted them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PluginStats {
    pub calls: u64,
    /// Their total time, waits included.
    pub seconds: f64,
    /// Calls without a usable answer, by cause.
    pub failures: std::collections::BTreeMap<&'static str, u64>,
}

/// One plugin version's handles in one realm: its call latency from the
/// start, its failures from the first of each cause.
#[derive(Debug)]
pub struct PluginMetrics {
    version: i64,
    labels: Labels<3>,
    family: Family<Labels<4>, Counter>,
    calls: Histogram,
    totals: CallTotals,
    failures: [OnceLock<Counter>; PluginFailure::ALL.len()],
}

/// How many calls, and their total time in microseconds.
#[derive(Clone, Debug, Default)]
pub struct CallTotals {
    calls: Counter,
    micros: Counter,
}

impl PluginMetrics {
    /// A call took `elapsed`, whatever it answered.
    pub fn called(&self, elapsed: Duration) {
        self.calls.observe(elapsed.as_secs_f64());
        self.totals.calls.inc();
        self.totals.micros.inc_by(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// A call gave no usable answer, for `cause`.
    pub fn failed(&self, cause: PluginFailure) {
        self.failures[cause.index()]
            .get_or_init(|| self.family.get_or_create_owned(&with_cause(&self.labels, cause)))
            .inc();
    }
}
