//! `GET /metrics`: what a scripted run counts, exactly; that no request
//! makes a series for a realm that does not exist; and who may read them.

use std::collections::HashMap;

use super::*;

/// `GET /metrics` with `token` as the bearer, if any: the status, the
/// `Content-Type` and the text.
async fn scrape_as(app: &Arc<App>, token: Option<&str>) -> (u16, String, String) {
    let mut request = Request::get("/metrics");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.handle(request.body(Full::new(Bytes::new())).unwrap()).await;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// The operator's scrape, as samples.
async fn scrape(app: &Arc<App>) -> Samples {
    let (status, content_type, text) = scrape_as(app, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Samples::parse(&text)
}

/// The samples of a scrape in the text format, by series (`name{labels}`
/// as written), with the text kept for messages.
struct Samples {
    values: HashMap<String, f64>,
    text: String,
}

impl Samples {
    /// Reads every sample line: `series value`, comments skipped; every
    /// other line is a test failure.
    fn parse(text: &str) -> Self {
        let mut values = HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
            assert!(values.insert(series.to_string(), value).is_none(), "{series} twice");
        }
        Self { values, text: text.to_string() }
    }

    /// The value of `name` with `labels` (in the order the server writes
    /// them); a test failure if there is no such series.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let series = series(name, labels);
        *self.values.get(&series).unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }

    /// The value of the hostile realm's `name` with `labels` after its
    /// `realm` label.
    fn realm(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: Vec<_> = [("realm", REALM)].into_iter().chain(labels.iter().copied()).collect();
        self.get(name, &labels)
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.values.contains_key(&series(name, labels))
    }

    /// Whether the hostile realm has no series `name` with `labels`.
    fn realm_lacks(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let labels: Vec<_> = [("realm", REALM)].into_iter().chain(labels.iter().copied()).collect();
        !self.has(name, &labels)
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

const DCR: (&str, &str) = ("plugin", "misbehaving-dcr");
const MAY_ACT: (&str, &str) = ("plugin", "misbehaving-may-act");
const V1: (&str, &str) = ("version", "1");

#[tokio::test]
async fn a_scripted_run_is_counted_exactly() {
    let app = app();
    // Three registrations, each running the realm's DCR policy; one more
    // whose policy traps.
    let mut clients = Vec::new();
    for i in 0..3 {
        let (status, client) = register(&app, &format!("fine-{i}")).await;
        assert_eq!(status, 201, "{client}");
        clients.push(client);
    }
    let (status, _) = register(&app, "dcr-trap").await;
    assert_eq!(status, 500);
    // Four client credentials tokens (JWTs, the DCR policy says), each
    // running the client's may-act policy.
    let mut token = String::new();
    for client in clients.iter().cycle().take(4) {
        let (status, body) = client_credentials(&app, client).await;
        assert_eq!(status, 200, "{body}");
        token = body["access_token"].as_str().unwrap().to_string();
    }
    // One failed client authentication, by client_secret_post.
    let mut wrong = clients[0].clone();
    wrong["client_secret"] = json!("not-the-secret-0123456789");
    let (status, _) = client_credentials(&app, &wrong).await;
    assert_eq!(status, 401);
    // One exchange the exchange rules refuse: the client may not exchange.
    let (status, body) = exchange_as(&app, &clients[0], &token, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");

    let samples = scrape(&app).await;
    let created = [("endpoint", "aiagent/register"), ("outcome", "created")];
    assert_eq!(samples.realm("agentauth_registrations_total", &created), 3.0);
    let failed = [("endpoint", "aiagent/register"), ("outcome", "failed")];
    assert_eq!(samples.realm("agentauth_registrations_total", &failed), 1.0);
    let refused = [("endpoint", "aiagent/register"), ("outcome", "refused")];
    assert!(samples.realm_lacks("agentauth_registrations_total", &refused), "a series is made on its first count");
    let jwt = [("grant", "client_credentials"), ("kind", "jwt")];
    assert_eq!(samples.realm("agentauth_tokens_issued_total", &jwt), 4.0);
    let opaque = [("grant", "client_credentials"), ("kind", "opaque")];
    assert!(samples.realm_lacks("agentauth_tokens_issued_total", &opaque));
    assert_eq!(samples.realm("agentauth_token_exchanges_total", &[("outcome", "refused")]), 1.0);
    assert!(samples.realm_lacks("agentauth_token_exchanges_total", &[("outcome", "issued")]));
    let post = [("method", "client_secret_post")];
    assert_eq!(samples.realm("agentauth_client_authentication_failures_total", &post), 1.0);
    let basic = [("method", "client_secret_basic")];
    assert!(samples.realm_lacks("agentauth_client_authentication_failures_total", &basic));
    for (code, count) in [("invalid_client", 1.0), ("unauthorized_client", 1.0), ("server_error", 1.0)] {
        assert_eq!(samples.realm("agentauth_oauth_errors_total", &[("error", code)]), count, "{code}");
    }
    // Plugins, by name and version: four DCR calls, one of them trapped;
    // four may-act calls.
    assert_eq!(samples.realm("agentauth_plugin_call_duration_seconds_count", &[DCR, V1]), 4.0);
    assert_eq!(samples.realm("agentauth_plugin_failures_total", &[DCR, V1, ("cause", "trap")]), 1.0);
    assert!(samples.realm_lacks("agentauth_plugin_failures_total", &[DCR, V1, ("cause", "timeout")]));
    assert_eq!(samples.realm("agentauth_plugin_call_duration_seconds_count", &[MAY_ACT, V1]), 4.0);
    // Request latency, per endpoint.
    assert_eq!(samples.realm("agentauth_request_duration_seconds_count", &[("endpoint", "register")]), 4.0);
    assert_eq!(samples.realm("agentauth_request_duration_seconds_count", &[("endpoint", "token")]), 6.0);
    let inf = [("endpoint", "token"), ("le", "+Inf")];
    assert_eq!(samples.realm("agentauth_request_duration_seconds_bucket", &inf), 6.0);
    assert!(samples.realm_lacks("agentauth_request_duration_seconds_count", &[("endpoint", "jwks")]));
    // The realm's two plugins were compiled when it was provisioned, and
    // loaded from their stored artifacts since.
    assert_eq!(samples.get("agentauth_plugin_compilations_total", &[("outcome", "compiled")]), 2.0);
    assert_eq!(samples.get("agentauth_plugin_compile_duration_seconds_count", &[]), 2.0);
    // Every registration was a write, each acknowledged after a commit.
    let commits = samples.get("agentauth_store_commit_duration_seconds_count", &[]);
    assert!(commits >= 3.0, "{commits} commits");
    assert!(samples.get("agentauth_store_commit_writes_sum", &[]) >= commits);
    // No rotation, no limit reached.
    assert!(samples.realm_lacks("agentauth_key_rotations_total", &[("trigger", "requested")]));
    assert!(samples.realm_lacks("agentauth_rate_limited_total", &[("limit", "registrations")]));
    let key_made = samples.realm("agentauth_signing_key_created_timestamp_seconds", &[]);
    assert!((key_made - app.service.now() as f64).abs() < 60.0, "{key_made}");
}

#[tokio::test]
async fn a_request_naming_a_realm_that_does_not_exist_makes_no_series_for_it() {
    let app = app();
    let get = |path: String| Request::get(path).body(Full::new(Bytes::new())).unwrap();
    let nowhere = "nowhere-0123456789";
    let client = json!({"client_id": "someone", "client_secret": "a-secret-0123456789"});
    assert_eq!(
        call(&app, post(nowhere, "access_token", FORM, as_client(Form::client_credentials(), &client))).await.0,
        404
    );
    assert_eq!(call(&app, post(nowhere, "aiagent/register", JSON, "{}".into())).await.0, 404);
    assert_eq!(call(&app, get(realm_path(nowhere, "connect/jwk_uri"))).await.0, 404);
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{nowhere}/keys"), Value::Null).await;
    assert_eq!(status, 404);
    let (status, _) =
        admin_as(&app, "a-wrong-admin-token-0123456789", "GET", &format!("/{nowhere}"), Value::Null).await;
    assert_eq!(status, 401);

    let samples = scrape(&app).await;
    assert!(!samples.text.contains(nowhere), "{}", samples.text);
    // They were counted, under no realm.
    let unknown =
        |endpoint| samples.get("agentauth_request_duration_seconds_count", &[("realm", "-"), ("endpoint", endpoint)]);
    assert_eq!(unknown("token"), 1.0);
    assert_eq!(unknown("register"), 1.0);
    assert_eq!(unknown("jwks"), 1.0);
    assert_eq!(unknown("admin"), 2.0);
    // The realms named in series are the realms there are.
    for line in samples.text.lines().filter(|l| l.contains("realm=\"")) {
        assert!(line.contains("realm=\"-\"") || line.contains(&format!("realm=\"{REALM}\"")), "{line}");
    }
}

#[tokio::test]
async fn the_metrics_are_the_operators_only() {
    let app = app();
    let (status, _, text) = scrape_as(&app, None).await;
    assert_eq!(status, 401, "{text}");
    let (status, _, _) = scrape_as(&app, Some("a-wrong-admin-token-0123456789")).await;
    assert_eq!(status, 401);
    // A realm admin sees its realm through the admin API, not every
    // realm's metrics.
    let (status, created) =
        admin_as(&app, ADMIN_TOKEN, "POST", &format!("/{REALM}/admins"), json!({"name": "ops"})).await;
    assert_eq!(status, 201, "{created}");
    let (status, _, text) = scrape_as(&app, created["token"].as_str()).await;
    assert_eq!(status, 403, "{text}");
    let (status, _, text) = scrape_as(&app, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE agentauth_open_connections gauge"), "{text}");
    let post = Request::post("/metrics").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(call(&app, post).await.0, 405);

    // With the admin API off, there is nothing there.
    let config = Config {
        master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
        admin_token: None,
        public_url: "https://as.example.test".into(),
        base_path: "/am".into(),
        workers: Some(1),
        versions: serde_json::Map::new(),
        loopback_fetch: false,
    };
    let closed = App::new(config, Store::open_in_memory().unwrap()).unwrap();
    assert_eq!(scrape_as(&closed, None).await.0, 404);
    assert_eq!(scrape_as(&closed, Some(ADMIN_TOKEN)).await.0, 404);
}

#[tokio::test]
async fn the_metrics_listener_answers_get_metrics_only_and_without_a_token() {
    let app = app();
    let request = |method: &str, path: &str| Request::builder().method(method).uri(path).body(()).unwrap();
    let response = app.answer_metrics(&request("GET", "/metrics"));
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(Samples::parse(std::str::from_utf8(&text).unwrap()).has("agentauth_open_connections", &[]));
    assert_eq!(app.answer_metrics(&request("POST", "/metrics")).status(), 405);
    for path in ["/healthz", "/admin/v1/realms", &realm_path(REALM, "connect/jwk_uri")] {
        assert_eq!(app.answer_metrics(&request("GET", path)).status(), 404, "{path}");
    }
}

#[tokio::test]
async fn a_version_no_longer_active_and_a_deleted_realm_leave_the_metrics() {
    let app = app();
    let jwks = Request::get(realm_path(REALM, "connect/jwk_uri")).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(call(&app, jwks).await.0, 200);
    let samples = scrape(&app).await;
    assert_eq!(samples.realm("agentauth_plugin_call_duration_seconds_count", &[MAY_ACT, V1]), 0.0);
    let (status, body) = push_seed_may_act(&app).await;
    assert_eq!(status, 201, "{body}");
    let samples = scrape(&app).await;
    let v2 = ("version", "2");
    assert_eq!(samples.realm("agentauth_plugin_call_duration_seconds_count", &[MAY_ACT, v2]), 0.0);
    assert!(!samples.has("agentauth_plugin_call_duration_seconds_count", &[("realm", REALM), MAY_ACT, V1]));
    assert!(samples.has("agentauth_plugin_call_duration_seconds_count", &[("realm", REALM), DCR, V1]));

    let (status, _) = admin_as(&app, ADMIN_TOKEN, "DELETE", &format!("/{REALM}"), Value::Null).await;
    assert_eq!(status, 204);
    let samples = scrape(&app).await;
    assert!(!samples.text.contains(&format!("realm=\"{REALM}\"")), "{}", samples.text);
}

#[tokio::test]
async fn rotations_and_limits_reached_are_counted() {
    let app = app();
    let (status, _) = admin_as(
        &app,
        ADMIN_TOKEN,
        "PATCH",
        &format!("/{REALM}"),
        json!({"registrations_per_minute": 1, "key_rotations_per_minute": 1}),
    )
    .await;
    assert_eq!(status, 200);
    app.warm_up(REALM).unwrap();
    let first = app.service.store().keys(REALM).unwrap()[0].created_at;
    // One rotation on schedule, one asked for, one more refused.
    app.maintain(first + 90 * 86_400);
    let rotate = format!("/{REALM}/keys/rotate");
    assert_eq!(admin_as(&app, ADMIN_TOKEN, "POST", &rotate, Value::Null).await.0, 200);
    assert_eq!(admin_as(&app, ADMIN_TOKEN, "POST", &rotate, Value::Null).await.0, 429);
    // One registration, one more refused.
    assert_eq!(register(&app, "fine").await.0, 201);
    assert_eq!(register(&app, "fine").await.0, 429);

    let samples = scrape(&app).await;
    assert_eq!(samples.realm("agentauth_key_rotations_total", &[("trigger", "scheduled")]), 1.0);
    assert_eq!(samples.realm("agentauth_key_rotations_total", &[("trigger", "requested")]), 1.0);
    assert_eq!(samples.realm("agentauth_rate_limited_total", &[("limit", "key_rotations")]), 1.0);
    assert_eq!(samples.realm("agentauth_rate_limited_total", &[("limit", "registrations")]), 1.0);
    let refused = [("endpoint", "aiagent/register"), ("outcome", "refused")];
    assert_eq!(samples.realm("agentauth_registrations_total", &refused), 1.0);
    assert_eq!(samples.realm("agentauth_oauth_errors_total", &[("error", "slow_down")]), 1.0);
    // The key that signs now is the one rotated on schedule, published
    // before it signs: the realm's tokens are still signed by the first.
    let signing = samples.realm("agentauth_signing_key_created_timestamp_seconds", &[]);
    assert_eq!(signing, first as f64);
}
