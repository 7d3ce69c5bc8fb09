//! The HTTP edge of agentauth: routing, bounded parsing, client
//! authentication, and the mapping of domain outcomes to RFC responses.
//!
//! [`App`] is the whole server without a socket: [`App::handle`] takes a
//! request and returns a response, so tests can call it directly;
//! [`serve`] runs it on a listener with hyper.

mod admin;
mod client_auth;
mod conn;
mod endpoint;
mod http;
mod rate;
mod realm;
mod route;
mod secrets;
#[cfg(test)]
mod tests;
mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentauth_jose::MasterKey;
use agentauth_plugin_host::{HookKind, PluginHost};
use agentauth_store::Store;
use http_body_util::Full;
use hyper::body::Body;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use conn::ConnectionLimits;
pub use realm::RealmSettings;
pub use watch::watch_plugins;

use crate::http::Reply;
use crate::realm::Realms;
use crate::route::Route;
use crate::secrets::Hasher;

/// Largest request body accepted; registration metadata and token
/// requests are far smaller.
const MAX_BODY: usize = 64 * 1024;
/// Largest request head (request line and headers); past it, 431.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head, or its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Validated server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seals the realms' private keys at rest.
    pub master_key: Arc<MasterKey>,
    /// The bearer token of the admin API; `None` disables the admin API.
    pub admin_token: Option<AdminToken>,
    /// The externally visible origin, e.g. `https://am.example.com:8443`,
    /// without a trailing slash. Issuers and endpoint URLs start with it.
    pub public_url: String,
    /// The path prefix of the OAuth endpoints, `/am` by default so PingAM
    /// clients work unchanged. Empty, or starting with `/`.
    pub base_path: String,
}

/// The admin API's bearer token. `Debug` never prints it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Accepts tokens of at least 16 characters: a short token would be a
    /// guessable key to every realm.
    pub fn new(token: String) -> Result<Self, StartError> {
        if token.len() < 16 {
            return Err(StartError("the admin token must be at least 16 characters".into()));
        }
        Ok(Self(token))
    }

    pub(crate) fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (a, b) = (
            ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes()),
            ring::digest::digest(&ring::digest::SHA256, presented.as_bytes()),
        );
        bool::from(a.as_ref().ct_eq(b.as_ref()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The server's state, shared by every request.
#[derive(Debug)]
pub struct App {
    config: Config,
    /// `{public-url}{base}`, the start of every issuer.
    issuer_prefix: String,
    store: Arc<Store>,
    host: PluginHost,
    realms: Realms,
    hasher: Hasher,
    registrations: rate::RateLimiter,
    /// Plugin uploads per realm (`plugin_pushes_per_minute`).
    plugin_pushes: rate::RateLimiter,
    /// Key rotations per realm through the admin API
    /// (`key_rotations_per_minute`).
    key_rotations: rate::RateLimiter,
    /// Plugin uploads being handled, all realms together.
    uploads_in_flight: std::sync::atomic::AtomicUsize,
    /// The realms with an upload in flight: one each, so no realm takes
    /// every place.
    uploading_realms: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl App {
    /// The name of the server secret that proves which master key sealed
    /// this database's keys.
    pub const MASTER_KEY_CHECK: &'static str = "master-key-check";

    /// The server, compiling plugins in process (see
    /// [`App::with_plugin_host`]).
    pub fn new(config: Config, store: Store) -> Result<Arc<Self>, StartError> {
        let host = PluginHost::new().map_err(|e| StartError(format!("plugin host: {e}")))?;
        Self::with_plugin_host(config, store, host)
    }

    /// The server with `host`, whose [`agentauth_plugin_host::Compiler`]
    /// says where uploads are compiled: `agentauth serve` bounds each
    /// compilation in a child process.
    pub fn with_plugin_host(config: Config, store: Store, host: PluginHost) -> Result<Arc<Self>, StartError> {
        // A wrong master key must stop the server, never lead it to make
        // new keys: check it against what the database was sealed with.
        let master = &config.master_key;
        let check = store
            .server_secret(Self::MASTER_KEY_CHECK, || {
                master.seal(b"master-key-check", b"agentauth").unwrap_or_default()
            })
            .map_err(|e| StartError(format!("reading the master key check: {e}")))?;
        if master.open(b"master-key-check", &check).is_err() {
            return Err(StartError(
                "the master key does not open this database's keys: start with the master key it was created with \
                 (AGENTAUTH_MASTER_KEY or --master-key-file)"
                    .into(),
            ));
        }
        let hasher = Hasher::load(&store).map_err(|e| StartError(format!("loading the secret-hashing key: {e}")))?;
        let issuer_prefix = format!("{}{}", config.public_url, config.base_path);
        Ok(Arc::new(Self {
            config,
            issuer_prefix,
            store: Arc::new(store),
            host,
            realms: Realms::default(),
            hasher,
            registrations: rate::RateLimiter::default(),
            plugin_pushes: rate::RateLimiter::default(),
            key_rotations: rate::RateLimiter::default(),
            uploads_in_flight: std::sync::atomic::AtomicUsize::new(0),
            uploading_realms: std::sync::Mutex::default(),
        }))
    }

    /// Creates realm `name` with `settings` unless it exists, storing
    /// `plugins` (name, hook, component) as their first versions. Each
    /// plugin is validated first, so a realm never starts with one that
    /// cannot run. Returns whether the realm was created.
    pub fn provision_realm(
        &self,
        name: &str,
        settings: &RealmSettings,
        plugins: &[(&str, HookKind, &[u8])],
    ) -> Result<bool, StartError> {
        if self.store.realm(name).map_err(|e| StartError(e.to_string()))?.is_some() {
            return Ok(false);
        }
        let cache = realm::StoredArtifacts { store: &self.store, now: now() };
        for (plugin, kind, component) in plugins {
            self.host.load_cached(*kind, plugin, 1, component, &cache).map_err(|e| StartError(e.to_string()))?;
        }
        let settings = serde_json::to_string(settings).map_err(|e| StartError(e.to_string()))?;
        let created =
            self.store.create_realm_if_absent(name, &settings, now()).map_err(|e| StartError(e.to_string()))?;
        if created {
            for (plugin, kind, component) in plugins {
                let sha256 = agentauth_plugin_host::sha256_hex(component);
                self.store
                    .add_plugin_version(name, plugin, *kind, &sha256, component, now())
                    .map_err(|e| StartError(e.to_string()))?;
            }
        }
        Ok(created)
    }

    fn sources(&self) -> realm::Sources<'_> {
        realm::Sources {
            store: &self.store,
            host: &self.host,
            master_key: &self.config.master_key,
            issuer_prefix: &self.issuer_prefix,
            now: now(),
        }
    }

    /// The realm's current runtime; `None` if there is no such realm.
    fn realm(&self, name: &str) -> Result<Option<Arc<realm::RealmRuntime>>, agentauth_core::OAuthError> {
        self.realms.get(name, &self.sources())
    }

    /// Rebuilds and publishes the realm's runtime after a change.
    fn republish(
        &self,
        name: &str,
        fresh: Option<Arc<agentauth_plugin_host::Plugin>>,
    ) -> Result<Option<Arc<realm::RealmRuntime>>, agentauth_core::OAuthError> {
        self.realms.rebuild(name, &self.sources(), fresh)
    }

    /// Loads realm `name` (its keys, generated on first use, and its
    /// plugins, compiled) so the first request does not pay for it.
    pub fn warm_up(&self, name: &str) -> Result<(), StartError> {
        match self.realm(name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StartError(format!("realm {name} does not exist"))),
            Err(e) => Err(StartError(format!("loading realm {name}: {}", e.description))),
        }
    }

    /// One of realm `name`'s plugin call slots, if the realm has plugins;
    /// a realm used for the first time is loaded (blocking work) first.
    async fn plugin_slot(self: &Arc<Self>, name: &str) -> Result<Option<agentauth_plugin_host::CallSlot>, Reply> {
        let runtime = match self.realms.loaded(name) {
            Some(runtime) => runtime,
            None => {
                let (app, name) = (Arc::clone(self), name.to_string());
                match tokio::task::spawn_blocking(move || app.realm(&name)).await {
                    Ok(Ok(Some(runtime))) => runtime,
                    // No such realm: the handler answers 404.
                    Ok(Ok(None)) => return Ok(None),
                    Ok(Err(e)) => return Err(Reply::error(&e)),
                    Err(e) => {
                        tracing::error!("loading a realm panicked: {e}");
                        return Err(Reply::error(&agentauth_core::OAuthError::server_error("internal error")));
                    }
                }
            }
        };
        if !runtime.has_plugins() {
            return Ok(None);
        }
        runtime.plugin_slot().await.map(Some).map_err(|e| Reply::error(&e))
    }

    /// Answers one request. Never fails: every error becomes a response.
    pub async fn handle<B>(self: &Arc<Self>, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let route = route::route(request.method(), request.uri().path(), &self.config.base_path);
        if let Route::NotFound = route {
            return Reply::not_found().into_response();
        }
        if let Route::Health = route {
            return Reply::text(200, "ok").into_response();
        }
        let mut limit = MAX_BODY;
        let mut upload = None;
        let (mut parts, body) = request.into_parts();
        if let Route::Admin { realm, op } = &route {
            // The caller is identified, and its right to this operation
            // checked, before a byte of the body is read.
            let app = Arc::clone(self);
            let (headers, realm, op) = (parts.headers.clone(), realm.clone(), op.clone());
            // An upload is also admitted (its place among the uploads in
            // flight, its turn in the realm's rate) before its body is
            // read; only an upload may send a large body.
            let checked = tokio::task::spawn_blocking(move || {
                let principal = admin::authenticate(&app, &headers)?;
                admin::permit(&principal, &realm, &op)?;
                let upload = match op {
                    route::AdminOp::PushPlugin { .. } => Some(admin::admit_upload(&app, &realm)?),
                    _ => None,
                };
                Ok::<_, Reply>((principal, upload))
            })
            .await;
            match checked {
                Ok(Ok((principal, admitted))) => {
                    parts.extensions.insert(principal);
                    if admitted.is_some() {
                        limit = admin::MAX_BODY;
                    }
                    upload = admitted;
                }
                Ok(Err(reply)) => return reply.into_response(),
                Err(e) => {
                    tracing::error!("admin authentication panicked: {e}");
                    return Reply::error(&agentauth_core::OAuthError::server_error("internal error")).into_response();
                }
            };
        }
        let body = match http::read_body(body, limit, READ_TIMEOUT).await {
            Ok(body) => body,
            Err(reply) => return reply.into_response(),
        };
        // A request that may run the realm's plugins takes one of the
        // realm's call slots first, waiting asynchronously: requests beyond
        // a realm's slots hold no thread while they wait.
        let slot = match &route {
            Route::Register { realm, .. } | Route::Manage { realm } | Route::Token { realm } => {
                match self.plugin_slot(realm).await {
                    Ok(slot) => slot,
                    Err(reply) => return reply.into_response(),
                }
            }
            _ => None,
        };
        // Handlers do blocking work (SQLite, RSA signing, plugin calls):
        // keep it off the threads that drive connections.
        let app = Arc::clone(self);
        let reply = tokio::task::spawn_blocking(move || {
            let _held = (slot, upload);
            endpoint::dispatch(&app, route, &parts, &body)
        })
        .await;
        match reply {
            Ok(reply) => reply.into_response(),
            Err(e) => {
                tracing::error!("request handler panicked: {e}");
                Reply::error(&agentauth_core::OAuthError::server_error("internal error")).into_response()
            }
        }
    }
}

/// The address a request came from, for per-source limits.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// How often the server does its housekeeping (see [`App::maintain`]).
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

impl App {
    /// Housekeeping, run every minute: rotates the signing keys that are
    /// due (`key_rotation_days`) and deletes expired rows. Blocking.
    pub fn maintain(&self, now: i64) {
        match admin::rotate_due_keys(self, now) {
            Ok(rotated) if rotated.is_empty() => {}
            Ok(rotated) => tracing::info!(?rotated, "rotated signing keys on schedule"),
            Err(e) => tracing::warn!("scheduled key rotation: {e}"),
        }
        match self.store.sweep(now) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "swept expired rows"),
            Err(e) => tracing::warn!("sweeping expired rows: {e}"),
        }
    }
}

/// Runs [`App::maintain`] every minute until the process ends. Failures
/// are logged and retried next time.
pub async fn maintain_periodically(app: Arc<App>) {
    loop {
        tokio::time::sleep(MAINTAIN_EVERY).await;
        let app = Arc::clone(&app);
        if let Err(e) = tokio::task::spawn_blocking(move || app.maintain(now())).await {
            tracing::warn!("housekeeping panicked: {e}");
        }
    }
}

/// How long `accept` pauses after an error that is the server's (out of
/// descriptors or memory), rather than the connection's: a pause, not a
/// spin, while connections close.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

/// Serves `app` on `listener` within `limits` (see [`ConnectionLimits`])
/// until `shutdown` completes, then lets the requests in flight finish (for
/// at most 10 seconds).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The head timeout also runs while a keep-alive connection waits for
    // its next request, so it bounds idle connections too.
    http.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout).max_buf_size(MAX_HEAD).max_headers(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let sources = conn::Sources::new(limits.max_per_source);
    // A cap reached under attack stays reached: say so now and then.
    let mut full_warning = conn::Every::new(conn::WARN_EVERY);
    let mut source_warning = conn::Every::new(conn::WARN_EVERY);
    let mut accept_warning = conn::Every::new(conn::WARN_EVERY);
    tokio::pin!(shutdown);
    loop {
        // At the server-wide cap, accept nothing until a connection closes.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_warning.due() {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if conn::is_connection_error(&e) => continue,
                Err(e) => {
                    if accept_warning.due() {
                        tracing::warn!("accept failed: {e}; pausing new connections");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(source_slot) = sources.admit(peer.ip()) else {
            if source_warning.due() {
                tracing::warn!(
                    %peer,
                    max = limits.max_per_source,
                    "per-source connection limit reached: refusing new connections from this source"
                );
            }
            conn::refuse(stream, slot);
            continue;
        };
        // Responses go out whole; waiting to coalesce them only adds latency.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "TCP_NODELAY: {e}");
        }
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            let app = Arc::clone(&app);
            request.extensions_mut().insert(Peer(peer));
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let io = TokioIo::new(conn::WriteDeadline::new(stream, limits.write_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // The slots are held for as long as the connection is open.
            let _held = (slot, source_slot);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection closed: {e}");
            }
        });
    }
    // Close the listening socket now: connections the kernel would
    // otherwise queue for an accept that never comes are refused at once.
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after 10 s; stopping anyway");
    }
}
