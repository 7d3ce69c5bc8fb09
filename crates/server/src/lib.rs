//! The HTTP edge of agentauth: routing, bounded parsing, client
//! authentication, and the mapping of domain outcomes to RFC responses.
//!
//! [`App`] is the whole server without a socket: [`App::handle`] takes a
//! request and returns a response, so tests can call it directly;
//! [`serve`] runs it on a listener with hyper.

mod admin;
mod conn;
mod console;
mod endpoint;
mod http;
mod route;
#[cfg(test)]
mod tests;
mod trace;
mod watch;
mod workers;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agentauth_core::ports::Storage;
use agentauth_jose::MasterKey;
use agentauth_plugin_host::{HookKind, PluginHost};
use agentauth_service::telemetry::RateLimit;
use agentauth_service::{RealmRuntime, Service, SystemClock};
use http_body_util::Full;
use hyper::body::Body;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use agentauth_service::{AdminToken, Clock, ManualClock, RealmSettings, StartError};
pub use conn::ConnectionLimits;
pub use trace::export_traces;
pub use watch::watch_plugins;

use crate::http::Reply;
use crate::route::Route;

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
    /// Threads for the handlers' blocking work; `None` for
    /// [`default_workers`].
    pub workers: Option<usize>,
    /// What `GET /version` answers: the versions the server is made of
    /// (`{"agentauth": "0.1.0", "wasmtime": "48.0.8", ...}`), nothing
    /// about its host or its settings.
    pub versions: serde_json::Map<String, serde_json::Value>,
    /// Development only: fetch documents from outside (trusted issuers'
    /// keys, client metadata documents) from loopback addresses too, over
    /// plain HTTP as well.
    pub loopback_fetch: bool,
}

/// Handler threads by default: four per core. A handler that stores
/// something waits for its commit's fsync on its worker, and concurrent
/// writes share a commit only if enough workers wait together: with fewer,
/// opaque tokens and registrations lose half their rate (docs/BENCHMARKS.md
/// has the measurements). A server that only signs JWTs does better with
/// one per core (`--workers`).
pub fn default_workers() -> usize {
    4 * std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// The server: the HTTP edge over the application [`Service`].
#[derive(Debug)]
pub struct App {
    /// The path prefix of the OAuth endpoints.
    base_path: String,
    pub service: Arc<Service>,
    /// Where handlers run their blocking work.
    workers: workers::Workers,
    /// Whether the realms have been loaded (keys unsealed, plugins
    /// compiled) since start: until then the replica is not ready.
    warmed: std::sync::atomic::AtomicBool,
    /// The body of `GET /version`.
    versions: serde_json::Value,
    /// The origin of the server's public URL, which the console's pages
    /// have (see `console`).
    origin: String,
}

impl App {
    /// The name of the server secret that proves which master key sealed
    /// this database's keys.
    pub const MASTER_KEY_CHECK: &'static str = Service::MASTER_KEY_CHECK;

    /// The server on `store`, compiling plugins in process (see
    /// [`App::with_plugin_host`]).
    pub fn new(config: Config, store: impl Storage + 'static) -> Result<Arc<Self>, StartError> {
        let host = PluginHost::new().map_err(|e| StartError(format!("plugin host: {e}")))?;
        Self::with_plugin_host(config, Arc::new(store), host)
    }

    /// The server with `host`, whose [`agentauth_plugin_host::Compiler`]
    /// says where uploads are compiled: `agentauth serve` bounds each
    /// compilation in a child process.
    pub fn with_plugin_host(
        config: Config,
        store: Arc<dyn Storage>,
        host: PluginHost,
    ) -> Result<Arc<Self>, StartError> {
        Self::with_clock(config, store, host, Arc::new(SystemClock))
    }

    /// The server telling time by `clock` (tests move it).
    pub fn with_clock(
        config: Config,
        store: Arc<dyn Storage>,
        host: PluginHost,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StartError> {
        let service_config = agentauth_service::Config {
            master_key: config.master_key,
            admin_token: config.admin_token,
            issuer_prefix: format!("{}{}", config.public_url, config.base_path),
            fetch: agentauth_fetch::FetchPolicy {
                allow_loopback_http: config.loopback_fetch,
                ..agentauth_fetch::FetchPolicy::default()
            },
        };
        let service = Service::new(service_config, store, host, clock)?;
        let threads = config.workers.unwrap_or_else(default_workers);
        let workers =
            workers::Workers::new(threads).map_err(|e| StartError(format!("starting worker threads: {e}")))?;
        Ok(Arc::new(Self {
            origin: url::Url::parse(&config.public_url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|_| config.public_url.clone()),
            base_path: config.base_path,
            service: Arc::new(service),
            workers,
            warmed: std::sync::atomic::AtomicBool::new(false),
            versions: serde_json::Value::Object(config.versions),
        }))
    }

    /// Creates realm `name` unless it exists (see
    /// [`Service::provision_realm`]).
    pub fn provision_realm(
        &self,
        name: &str,
        settings: &RealmSettings,
        plugins: &[(&str, HookKind, &[u8])],
    ) -> Result<bool, StartError> {
        self.service.provision_realm(name, settings, plugins)
    }

    /// Loads realm `name` so the first request does not pay for it.
    pub fn warm_up(&self, name: &str) -> Result<(), StartError> {
        self.service.warm_up(name)
    }

    /// Housekeeping at `now` (see [`Service::maintain`]). Blocking.
    pub fn maintain(&self, now: i64) {
        self.service.maintain(now);
    }

    /// One of realm `name`'s plugin call slots, if the realm has plugins
    /// (or `always`); a realm used for the first time is loaded (blocking work) first. A
    /// refusal comes with the realm's runtime, whose metrics count it.
    async fn plugin_slot(
        self: &Arc<Self>,
        name: &str,
        always: bool,
    ) -> Result<Option<agentauth_plugin_host::CallSlot>, (Reply, Option<Arc<RealmRuntime>>)> {
        let runtime = match self.service.loaded_realm(name) {
            Some(runtime) => runtime,
            None => {
                let (service, name) = (Arc::clone(&self.service), name.to_string());
                match self.workers.run(move || service.realm(&name)).await {
                    Ok(Ok(Some(runtime))) => runtime,
                    // No such realm: the handler answers 404.
                    Ok(Ok(None)) => return Ok(None),
                    Ok(Err(e)) => return Err((Reply::error(&e), None)),
                    Err(workers::Panicked) => {
                        tracing::error!("loading a realm panicked");
                        return Err((Reply::error(&agentauth_core::OAuthError::server_error("internal error")), None));
                    }
                }
            }
        };
        match Service::plugin_slot_for(&runtime, always).await {
            Ok(slot) => Ok(slot),
            Err(e) => {
                runtime.metrics.oauth_error(e.code);
                Err((Reply::error(&e), Some(runtime)))
            }
        }
    }

    /// Loads every realm (unseals its keys, compiles its plugins) so no
    /// request pays for it, then reports the replica ready. A realm that
    /// cannot be loaded is logged and left to load on first use. Blocking.
    pub fn warm_up_all(&self) {
        match self.service.store().realm_names() {
            Ok(realms) => {
                for realm in &realms {
                    if let Err(e) = self.service.warm_up(realm) {
                        tracing::warn!(realm, "loading the realm: {e}");
                    }
                }
                tracing::info!(realms = realms.len(), "realms loaded");
            }
            Err(e) => tracing::warn!("listing the realms to load: {e}"),
        }
        self.warmed.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Readiness: 200 once the realms are loaded and while the database
    /// answers a ping, else 503 with a `Retry-After`, so a load balancer
    /// sends requests elsewhere.
    async fn readiness(self: &Arc<Self>) -> Reply {
        if !self.warmed.load(std::sync::atomic::Ordering::Acquire) {
            return Reply::json(503, &serde_json::json!({"status": "loading realms"}))
                .with_header(hyper::header::RETRY_AFTER, "1".into());
        }
        let service = Arc::clone(&self.service);
        match self.workers.run(move || service.store().ping()).await {
            Ok(Ok(())) => Reply::json(200, &serde_json::json!({"status": "ready"})),
            Ok(Err(e)) => {
                tracing::warn!("readiness: {e}");
                Reply::json(503, &serde_json::json!({"status": "unavailable"}))
                    .with_header(hyper::header::RETRY_AFTER, "2".into())
            }
            Err(_) => Reply::json(503, &serde_json::json!({"status": "unavailable"})),
        }
    }

    /// Answers one request. Never fails: every error becomes a response.
    ///
    /// Every request has an id, taken from a valid `X-Request-Id` or made
    /// here, echoed in the response's `X-Request-Id`; it and the W3C trace
    /// id (from a valid `traceparent`, else new) are fields of the
    /// request's span, so every log line of the request carries them,
    /// including those of the plugins it runs and the workers it uses.
    pub async fn handle<B>(self: &Arc<Self>, mut request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use tracing::Instrument as _;
        let context = trace::Context::of(request.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %context.request_id,
            trace_id = tracing::field::Empty,
            realm = tracing::field::Empty,
            client_id = tracing::field::Empty,
        );
        context.join(&span);
        request.extensions_mut().insert(trace::RequestId(context.request_id.clone()));
        let started = std::time::Instant::now();
        let (mut response, served) = self.answer(request).instrument(span.clone()).await;
        let elapsed = started.elapsed();
        if let Some(endpoint) = served.endpoint {
            match &served.realm {
                Some(realm) => realm.metrics.request(endpoint, elapsed),
                None => self.service.metrics().request_without_realm(endpoint, elapsed),
            }
        }
        span.in_scope(|| {
            tracing::debug!(
                status = response.status().as_u16(),
                elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "answered"
            );
        });
        if let Ok(id) = hyper::header::HeaderValue::from_str(&context.request_id) {
            response.headers_mut().insert(trace::REQUEST_ID, id);
        }
        response
    }

    /// Answers `GET /metrics` on the metrics listener: no authentication
    /// (it is meant for an internal interface), nothing else served.
    pub fn answer_metrics<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        match route::route(request.method(), request.uri().path(), &self.base_path) {
            Route::Metrics => Reply::metrics(self.service.metrics().encode()).into_response(),
            Route::MethodNotAllowed { allow } if request.uri().path() == route::METRICS_PATH => {
                Reply::method_not_allowed(allow).into_response()
            }
            _ => Reply::not_found().into_response(),
        }
    }

    /// Answers one request; says what it was for, so that its latency is
    /// counted: the endpoint, and the realm's runtime if the realm exists.
    async fn answer<B>(self: &Arc<Self>, request: Request<B>) -> (Response<Full<Bytes>>, Served)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let route = route::route(request.method(), request.uri().path(), &self.base_path);
        let mut served = Served { endpoint: route.endpoint(), realm: None };
        if let Some(realm) = route.realm() {
            tracing::Span::current().record("realm", realm);
        }
        match route {
            Route::NotFound => return (Reply::not_found().into_response(), served),
            Route::Health => return (Reply::text(200, "ok").into_response(), served),
            Route::Ready => return (self.readiness().await.into_response(), served),
            Route::Metrics => return (self.metrics(request).await.into_response(), served),
            Route::Version => return (Reply::json(200, &self.versions).into_response(), served),
            _ => {}
        }
        let mut limit = MAX_BODY;
        let mut upload = None;
        let (mut parts, body) = request.into_parts();
        if let Route::Admin { realm, op, console } = &route {
            // The caller is identified, and its right to this operation
            // checked, before a byte of the body is read.
            let app = Arc::clone(self);
            let (headers, realm, op, console) = (parts.headers.clone(), realm.clone(), op.clone(), *console);
            let method = parts.method.clone();
            // An upload is also admitted (its place among the uploads in
            // flight, its turn in the realm's rate) before its body is
            // read; only an upload may send a large body.
            let checked = self
                .workers
                .run(move || match console {
                    true => console::admit(&app, &method, &headers, &realm, &op),
                    false => admin::admit(&app, &headers, &realm, &op),
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
                Ok(Err(reply)) => {
                    // Refused before its body was read: the body is read
                    // and dropped, so the refusal reaches the client.
                    http::discard_body(body, admin::MAX_BODY, READ_TIMEOUT).await;
                    return (reply.into_response(), served);
                }
                Err(workers::Panicked) => {
                    tracing::error!("admin authentication panicked");
                    let reply = Reply::error(&agentauth_core::OAuthError::server_error("internal error"));
                    return (reply.into_response(), served);
                }
            };
        }
        let body = match http::read_body(body, limit, READ_TIMEOUT).await {
            Ok(body) => body,
            Err(reply) => return (reply.into_response(), served),
        };
        // A request that may run the realm's plugins takes one of the
        // realm's call slots first, waiting asynchronously: requests beyond
        // a realm's slots hold no thread while they wait.
        let slot = match &route {
            Route::Register { realm, .. }
            | Route::Manage { realm }
            | Route::Token { realm }
            | Route::Authorize { realm } => match self.plugin_slot(realm, false).await {
                Ok(slot) => slot,
                Err((reply, realm)) => {
                    served.realm = realm;
                    return (reply.into_response(), served);
                }
            },
            // A test runs a version whether or not the realm runs any: it
            // always takes a slot, so tests past the realm's slots wait
            // without a thread.
            Route::Admin { realm, op: route::AdminOp::TestPlugin { .. }, .. } => {
                match self.plugin_slot(realm, true).await {
                    Ok(slot) => slot,
                    Err((reply, realm)) => {
                        served.realm = realm;
                        return (reply.into_response(), served);
                    }
                }
            }
            _ => None,
        };
        // Handlers do blocking work (SQLite, RSA signing, plugin calls):
        // keep it off the threads that drive connections.
        let app = Arc::clone(self);
        let reply = self
            .workers
            .run(move || {
                let _held = (slot, upload);
                endpoint::dispatch(&app, route, &parts, &body)
            })
            .await;
        match reply {
            Ok((reply, realm)) => {
                served.realm = realm;
                (reply.into_response(), served)
            }
            Err(workers::Panicked) => {
                let reply = Reply::error(&agentauth_core::OAuthError::server_error("internal error"));
                (reply.into_response(), served)
            }
        }
    }

    /// `GET /metrics` on the main listener: for the operator's token only
    /// (see `admin::metrics`).
    async fn metrics<B>(self: &Arc<Self>, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes> + Send + 'static,
    {
        let (parts, body) = request.into_parts();
        // A GET carries no body worth reading: drop whatever came.
        http::discard_body(body, MAX_BODY, READ_TIMEOUT).await;
        let app = Arc::clone(self);
        match self.workers.run(move || admin::metrics(&app, &parts.headers)).await {
            Ok(reply) => reply,
            Err(workers::Panicked) => Reply::error(&agentauth_core::OAuthError::server_error("internal error")),
        }
    }
}

/// What a request was for, as its latency is counted.
struct Served {
    /// The endpoint, if it is one whose latency is measured.
    endpoint: Option<agentauth_service::telemetry::Endpoint>,
    /// The realm's runtime, when the request named an existing realm.
    realm: Option<Arc<RealmRuntime>>,
}

/// The address a request came from, for per-source limits.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// How often the server does its housekeeping (see [`App::maintain`]).
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

/// How often due security events are sent (see
/// `agentauth_service::events`).
const DELIVER_EVERY: Duration = Duration::from_secs(1);

/// Starts the delivery of due security events every second until the
/// process ends (each realm's on a thread of its own).
pub async fn deliver_events_periodically(app: Arc<App>) {
    loop {
        tokio::time::sleep(DELIVER_EVERY).await;
        let service = Arc::clone(&app.service);
        if let Err(e) = tokio::task::spawn_blocking(move || service.deliver_events()).await {
            tracing::warn!("security event delivery panicked: {e}");
        }
    }
}

/// Runs [`App::maintain`] every minute until the process ends. Failures
/// are logged and retried next time.
pub async fn maintain_periodically(app: Arc<App>) {
    loop {
        tokio::time::sleep(MAINTAIN_EVERY).await;
        let app = Arc::clone(&app);
        if let Err(e) = tokio::task::spawn_blocking(move || app.maintain(app.service.now())).await {
            tracing::warn!("housekeeping panicked: {e}");
        }
    }
}

/// How often a replica looks for changes made by others when no
/// notification came (a backend without notifications, or one lost).
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Follows the changes other processes sharing the store commit, from
/// `follower` on, on a thread of its own until the process ends: a plugin
/// pushed, a key rotated, a client deleted through another replica takes
/// effect here within [`FOLLOW_EVERY`] (at once, with notifications).
pub fn follow_changes(app: &Arc<App>, mut follower: agentauth_service::Follower) -> std::io::Result<()> {
    let service = Arc::clone(&app.service);
    std::thread::Builder::new().name("agentauth-follow".into()).spawn(move || {
        let mut warning = conn::Every::new(conn::WARN_EVERY);
        loop {
            service.store().wait_for_change(FOLLOW_EVERY);
            if let Err(e) = service.follow(&mut follower)
                && warning.due()
            {
                tracing::warn!("{e}; retrying");
            }
        }
    })?;
    Ok(())
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
            app.service.metrics().rate_limited_without_realm(RateLimit::ConnectionsPerSource);
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
        let open = OpenConnection::counted(&app.service);
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            let app = Arc::clone(&app);
            request.extensions_mut().insert(Peer(peer));
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let io = TokioIo::new(conn::WriteDeadline::new(stream, limits.write_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // The slots are held, and the connection counted, for as long
            // as it is open.
            let _held = (slot, source_slot, open);
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

/// An open connection of the main listener, counted in the metrics while
/// it lives.
struct OpenConnection(Arc<Service>);

impl OpenConnection {
    fn counted(service: &Arc<Service>) -> Self {
        service.metrics().connection_opened();
        Self(Arc::clone(service))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}

/// Most connections the metrics listener holds open at once: scrapers are
/// few.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics`, and nothing else, on `listener` without
/// authentication, until the process ends: for a listener bound to an
/// internal interface (`--metrics-listen`). At most
/// [`METRICS_CONNECTIONS`] connections are open at once; a connection
/// waits at most the read timeout for each request head.
pub async fn serve_metrics(listener: TcpListener, app: Arc<App>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(READ_TIMEOUT).max_buf_size(MAX_HEAD).max_headers(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let mut accept_warning = conn::Every::new(conn::WARN_EVERY);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if conn::is_connection_error(&e) => continue,
            Err(e) => {
                if accept_warning.due() {
                    tracing::warn!("metrics listener: accept failed: {e}; pausing");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = app.answer_metrics(&request);
            async move { Ok::<_, Infallible>(response) }
        });
        let io = TokioIo::new(conn::WriteDeadline::new(stream, READ_TIMEOUT));
        let connection = http.serve_connection(io, service);
        tokio::spawn(async move {
            let _held = slot;
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "metrics connection closed: {e}");
            }
        });
    }
}
