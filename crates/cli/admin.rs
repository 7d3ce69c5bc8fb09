//! The `plugin`, `realm`, `keys`, `user` and `trust` subcommands that talk to a
//! running server's admin API (`--server`, bearer token from
//! `AGENTAUTH_ADMIN_TOKEN`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where the server is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "AGENTAUTH_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The realm to act on.
    #[arg(long)]
    realm: String,
}

/// A call to the admin API.
struct Call<'a> {
    remote: &'a Remote,
    method: &'static str,
    path: String,
}

impl Call<'_> {
    fn url(&self) -> String {
        let realms = format!("{}/admin/v1/realms", self.remote.server.trim_end_matches('/'));
        match (self.remote.realm.as_str(), self.path.as_str()) {
            ("", _) => realms,
            (realm, "") => format!("{realms}/{realm}"),
            (realm, path) => format!("{realms}/{realm}/{path}"),
        }
    }

    fn send(self, content_type: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let token =
            std::env::var("AGENTAUTH_ADMIN_TOKEN").context("set AGENTAUTH_ADMIN_TOKEN to the server's admin token")?;
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let actor = std::env::var("USER").unwrap_or_default();
        let request = ureq::http::Request::builder()
            .method(self.method)
            .uri(self.url())
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type)
            .header("agentauth-actor", actor)
            .body(body)
            .context("building the request")?;
        let mut response = agent.run(request).with_context(|| format!("calling {}", self.url()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().context("reading the response")?;
        let value: Value = match text.trim() {
            "" => json!({}),
            text => serde_json::from_str(text).unwrap_or_else(|_| json!({ "body": text })),
        };
        if !(200..300).contains(&status) {
            let description = value["error_description"].as_str().unwrap_or(&text);
            bail!("{status} {}: {description}", value["error"].as_str().unwrap_or("error"));
        }
        Ok(value)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Upload a component as the next version of a plugin, and activate it.
    Push {
        #[command(flatten)]
        remote: Remote,
        /// The plugin's name in the realm.
        #[arg(long)]
        name: String,
        /// The hook it serves: dcr, may-act, token or scope.
        #[arg(long)]
        hook: String,
        /// Store the version without activating it.
        #[arg(long)]
        no_activate: bool,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// List the realm's plugins and their versions.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Make one version of a plugin the active one.
    Activate {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: i64,
    },
    /// Activate the version before the active one.
    Rollback {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
    },
    /// Delete one version of a plugin, or the whole plugin.
    Delete {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
        /// Only this version (not the active one).
        #[arg(long)]
        version: Option<i64>,
    },
    /// Run a plugin on a test case, without a server, and print its decision.
    Test(crate::plugin_test::Args),
    /// Run a version stored on the server (active or not) on a test case,
    /// under the realm's limits, and print its decision.
    TestVersion {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: i64,
        /// The test case (JSON, as for `plugin test`); `{}` when omitted.
        #[arg(long)]
        input: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List a realm's signing keys and their status.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Rotate a realm's signing key: the new key is published now and
    /// signs after the realm's key_publish_seconds; the old one stays in
    /// the JWKS until the tokens it signed have expired.
    Rotate {
        #[command(flatten)]
        remote: Remote,
        /// Switch to this algorithm: RS256, ES256 or EdDSA.
        #[arg(long)]
        alg: Option<String>,
    },
}

pub fn keys(command: KeysCommand) -> anyhow::Result<std::process::ExitCode> {
    let out = match command {
        KeysCommand::List { remote } => call(&remote, "GET", "keys".into()).send("application/json", vec![])?,
        KeysCommand::Rotate { remote, alg } => {
            let body = match alg {
                Some(alg) => json!({ "alg": alg }),
                None => json!({}),
            };
            call(&remote, "POST", "keys/rotate".into()).send("application/json", body.to_string().into_bytes())?
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Debug, clap::Subcommand)]
pub enum RealmCommand {
    /// List the server's realms.
    List {
        /// The server's base URL.
        #[arg(long, env = "AGENTAUTH_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// Create a realm, with settings as JSON (defaults for any left out),
    /// e.g. '{"ai_agents_enabled": true, "open_registration": true}'.
    Create {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, default_value = "{}")]
        settings: String,
    },
    /// Show a realm's settings.
    Show {
        #[command(flatten)]
        remote: Remote,
    },
    /// Change some of a realm's settings, given as JSON.
    Set {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        settings: String,
    },
    /// Delete a realm with its clients, keys, plugins and tokens.
    Delete {
        #[command(flatten)]
        remote: Remote,
    },
    /// Select the plugin that serves a realm-wide hook.
    SetHook {
        #[command(flatten)]
        remote: Remote,
        /// The hook: dcr, scope or token.
        #[arg(long)]
        hook: String,
        /// The plugin's name.
        #[arg(long, conflicts_with = "none", required_unless_present = "none")]
        plugin: Option<String>,
        /// Serve the hook with no plugin.
        #[arg(long)]
        none: bool,
    },
    /// Show which plugins serve the realm-wide hooks.
    Hooks {
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the realm's audit log of administrative changes; with
    /// --decisions or any filter, its audited decisions (each token issued
    /// or refused, each registration, update and deletion) instead.
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filter: DecisionFilter,
    },
    /// Make a realm admin: a bearer token (printed once) that manages this
    /// realm only. Operator only.
    AddAdmin {
        #[command(flatten)]
        remote: Remote,
        /// Who holds it, as the audit log will name them.
        #[arg(long)]
        name: String,
    },
    /// List the realm's admins (never their tokens). Operator only.
    Admins {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a realm admin. Operator only.
    RemoveAdmin {
        #[command(flatten)]
        remote: Remote,
        /// The admin's id, as `realm admins` shows it.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a local user of the realm. The password comes from a file or
    /// standard input, never the command line, where other users of the
    /// machine could read it (ps, /proc).
    Create {
        #[command(flatten)]
        remote: Remote,
        /// The name the user signs in with: ASCII letters, digits, '.',
        /// '_', '-', '@' or '+', compared lowercased.
        #[arg(long)]
        username: String,
        /// The name shown for the user.
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List the realm's users by username, a page at a time (never their
    /// passwords).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Users after this username (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one user, by subject or by username.
    Show {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
    },
    /// Disable a user: refused at every login until enabled again.
    Disable {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
    },
    /// Enable a disabled user again.
    Enable {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
    },
    /// Delete a user; its subject is never given to another.
    Delete {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
    },
    /// List the consents a user has given, client by client.
    Consents {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
    },
    /// Revoke a user's consent to a client: the client must ask again, and
    /// every token it holds from that consent stops working.
    RevokeConsent {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
        /// The client the consent was given to.
        #[arg(long)]
        client_id: String,
    },
    /// Set a user's password, read from a file or standard input.
    SetPassword {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        user: Which,
        #[command(flatten)]
        password: PasswordSource,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// List the realm's clients by id, a page at a time, with their state
    /// (never their credentials).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Clients after this id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Only clients in this state.
        #[arg(long, value_parser = ["active", "disabled", "expired"])]
        state: Option<String>,
        /// Only agents (clients registered at aiagent/register).
        #[arg(long)]
        agents: bool,
        /// Only clients not used for this many days.
        #[arg(long, value_name = "DAYS")]
        unused_days: Option<u32>,
        /// Only the clients of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Disable every active client of an owner.
    DisableOwned {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        owner: String,
    },
    /// Show one client: its registration, attributes and state.
    Show {
        #[command(flatten)]
        remote: Remote,
        client_id: String,
    },
    /// Disable a client: it can no longer authenticate, and every token it
    /// holds, or that names it as an actor, stops working at once and for
    /// good.
    Disable {
        #[command(flatten)]
        remote: Remote,
        client_id: String,
    },
    /// Enable a disabled client again (its old tokens stay dead).
    Enable {
        #[command(flatten)]
        remote: Remote,
        client_id: String,
    },
    /// Delete a client, with its tokens, codes and the consents given it.
    Delete {
        #[command(flatten)]
        remote: Remote,
        client_id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// List the issuers outside the realm whose JWTs it accepts.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one trusted issuer.
    Show {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
    },
    /// Trust an issuer for some purposes, or replace what it is trusted
    /// with. Give exactly one of --jwks-file, --jwks-uri and --discovery.
    Add(Box<TrustAdd>),
    /// Stop trusting an issuer: its tokens are refused from the next
    /// request on.
    Remove {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        name: String,
    },
}

/// What `trust add` is given: the trusted issuer, flag by flag (boxed in
/// [`TrustCommand`], whose other commands are small).
#[derive(Debug, clap::Args)]
pub struct TrustAdd {
    #[command(flatten)]
    remote: Remote,
    /// The realm's name for it: a-z, 0-9 and '-'.
    #[arg(long)]
    name: String,
    /// Its issuer identifier, exactly as its tokens' `iss` is.
    #[arg(long)]
    issuer: String,
    /// What its tokens may be used for: login, id_jag, jwt_bearer,
    /// client_auth, subject_token. Repeat for several.
    #[arg(long = "purpose", required = true)]
    purposes: Vec<String>,
    /// A JWKS file holding its public keys.
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// Where its public keys are published.
    #[arg(long)]
    jwks_uri: Option<String>,
    /// Read its keys' location from its OpenID discovery document.
    #[arg(long)]
    discovery: bool,
    /// An algorithm its tokens may be signed with (RS256, ES256,
    /// EdDSA); RS256 and ES256 when none is given. Repeat for several.
    #[arg(long = "algorithm")]
    algorithms: Vec<String>,
    /// The audience its tokens must name, when not the realm's issuer
    /// (an ID-JAG names the realm's issuer whatever this says).
    #[arg(long)]
    audience: Option<String>,
    #[arg(long)]
    clock_skew_seconds: Option<u32>,
    #[arg(long)]
    max_token_lifetime_seconds: Option<u32>,
    /// For --purpose login: the realm's client id at the provider,
    /// where the login page sends users to sign in.
    #[arg(long)]
    login_client_id: Option<String>,
    /// For --purpose login: the server's environment variable holding
    /// the realm's client secret there (the secret itself never goes
    /// into the settings); none for a public client, PKCE alone.
    #[arg(long, value_name = "NAME", requires = "login_client_id")]
    login_client_secret_env: Option<String>,
    /// For --purpose login: the scopes asked of the provider,
    /// space-separated, openid among them ("openid email profile" when
    /// not given).
    #[arg(long, requires = "login_client_id")]
    login_scope: Option<String>,
    /// For --purpose login: what the login page's button says, "Sign in
    /// with LABEL".
    #[arg(long, requires = "login_client_id")]
    login_label: Option<String>,
}

pub fn trust(command: TrustCommand) -> anyhow::Result<std::process::ExitCode> {
    let out = match command {
        TrustCommand::List { remote } => {
            call(&remote, "GET", "trusted-issuers".into()).send("application/json", vec![])?
        }
        TrustCommand::Show { remote, name } => {
            call(&remote, "GET", format!("trusted-issuers/{name}")).send("application/json", vec![])?
        }
        TrustCommand::Add(add) => {
            let TrustAdd {
                remote,
                name,
                issuer,
                purposes,
                jwks_file,
                jwks_uri,
                discovery,
                algorithms,
                audience,
                clock_skew_seconds,
                max_token_lifetime_seconds,
                login_client_id,
                login_client_secret_env,
                login_scope,
                login_label,
            } = *add;
            let mut body = json!({ "issuer": issuer, "purposes": purposes });
            if let Some(file) = jwks_file {
                let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                let jwks: Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                body["jwks"] = jwks;
            }
            if let Some(uri) = jwks_uri {
                body["jwks_uri"] = json!(uri);
            }
            if discovery {
                body["discovery"] = json!(true);
            }
            if !algorithms.is_empty() {
                body["algorithms"] = json!(algorithms);
            }
            if let Some(audience) = audience {
                body["audience"] = json!(audience);
            }
            if let Some(skew) = clock_skew_seconds {
                body["clock_skew_seconds"] = json!(skew);
            }
            if let Some(lifetime) = max_token_lifetime_seconds {
                body["max_token_lifetime_seconds"] = json!(lifetime);
            }
            // The server checks the login settings go with the login
            // purpose, and says what is missing when they do not.
            if let Some(client_id) = login_client_id {
                let mut login = json!({ "client_id": client_id });
                if let Some(env) = login_client_secret_env {
                    login["client_secret_env"] = json!(env);
                }
                if let Some(scope) = login_scope {
                    login["scope"] = json!(scope);
                }
                if let Some(label) = login_label {
                    login["label"] = json!(label);
                }
                body["login"] = login;
            }
            call(&remote, "PUT", format!("trusted-issuers/{name}"))
                .send("application/json", body.to_string().into_bytes())?
        }
        TrustCommand::Remove { remote, name } => {
            call(&remote, "DELETE", format!("trusted-issuers/{name}")).send("application/json", vec![])?;
            json!({ "name": name, "removed": true })
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Which user: by subject, or by username.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// The user's subject (`usr_...`).
    #[arg(long)]
    subject: Option<String>,
    /// The user's username.
    #[arg(long)]
    username: Option<String>,
}

impl Which {
    /// The user's subject, looked up by username when given one.
    fn subject(&self, remote: &Remote) -> anyhow::Result<String> {
        if let Some(subject) = &self.subject {
            return Ok(subject.clone());
        }
        let username = self.username.as_deref().unwrap_or_default();
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("username", username).finish();
        let found = call(remote, "GET", format!("users?{query}")).send("application/json", vec![])?;
        match found["users"][0]["subject"].as_str() {
            Some(subject) => Ok(subject.to_string()),
            None => bail!("realm {} has no user named {username}", remote.realm),
        }
    }
}

/// Where a password is read from: a file, or standard input (its first
/// line in both cases, without the line's end).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PasswordSource {
    /// Read the password from this file.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// The most of a password source read: more than any password may be.
const MAX_PASSWORD_INPUT: u64 = 64 * 1024;

impl PasswordSource {
    fn read(&self) -> anyhow::Result<String> {
        use std::io::Read as _;
        let mut text = String::new();
        match &self.password_file {
            Some(file) => {
                let opened = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
                opened
                    .take(MAX_PASSWORD_INPUT)
                    .read_to_string(&mut text)
                    .with_context(|| format!("reading the password from {}", file.display()))?;
            }
            None => {
                std::io::stdin()
                    .take(MAX_PASSWORD_INPUT)
                    .read_to_string(&mut text)
                    .context("reading the password from standard input")?;
            }
        }
        password_line(&text)
    }
}

/// The password in what was read: its first line, without the line's end.
fn password_line(text: &str) -> anyhow::Result<String> {
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        bail!("no password: its first line is empty");
    }
    Ok(line.to_string())
}

pub fn user(command: UserCommand) -> anyhow::Result<std::process::ExitCode> {
    let out = match command {
        UserCommand::Create { remote, username, display_name, email, password } => {
            let body = json!({
                "username": username,
                "password": password.read()?,
                "display_name": display_name,
                "email": email,
            });
            call(&remote, "POST", "users".into()).send("application/json", body.to_string().into_bytes())?
        }
        UserCommand::List { remote, after, limit } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(after) = &after {
                query.append_pair("after", after);
            }
            query.append_pair("limit", &limit.to_string());
            call(&remote, "GET", format!("users?{}", query.finish())).send("application/json", vec![])?
        }
        UserCommand::Show { remote, user } => {
            let subject = user.subject(&remote)?;
            call(&remote, "GET", format!("users/{subject}")).send("application/json", vec![])?
        }
        UserCommand::Disable { remote, user } => {
            let subject = user.subject(&remote)?;
            call(&remote, "POST", format!("users/{subject}/disable")).send("application/json", vec![])?
        }
        UserCommand::Enable { remote, user } => {
            let subject = user.subject(&remote)?;
            call(&remote, "POST", format!("users/{subject}/enable")).send("application/json", vec![])?
        }
        UserCommand::Delete { remote, user } => {
            let subject = user.subject(&remote)?;
            call(&remote, "DELETE", format!("users/{subject}")).send("application/json", vec![])?;
            json!({ "subject": subject, "deleted": true })
        }
        UserCommand::Consents { remote, user } => {
            let subject = user.subject(&remote)?;
            call(&remote, "GET", format!("users/{subject}/consents")).send("application/json", vec![])?
        }
        UserCommand::RevokeConsent { remote, user, client_id } => {
            let subject = user.subject(&remote)?;
            let client = form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>();
            call(&remote, "DELETE", format!("users/{subject}/consents/{client}")).send("application/json", vec![])?;
            json!({ "subject": subject, "client_id": client_id, "consent_revoked": true })
        }
        UserCommand::SetPassword { remote, user, password } => {
            let subject = user.subject(&remote)?;
            let body = json!({ "password": password.read()? });
            call(&remote, "PUT", format!("users/{subject}/password"))
                .send("application/json", body.to_string().into_bytes())?;
            json!({ "subject": subject, "password_set": true })
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn client(command: ClientCommand) -> anyhow::Result<std::process::ExitCode> {
    // Client ids may be URLs (client ID metadata documents): one path
    // segment, encoded.
    let segment = |id: &str| form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let out = match command {
        ClientCommand::List { remote, after, limit, state, agents, unused_days, owner } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(after) = &after {
                query.append_pair("after", after);
            }
            query.append_pair("limit", &limit.to_string());
            if let Some(state) = &state {
                query.append_pair("state", state);
            }
            if agents {
                query.append_pair("agents", "true");
            }
            if let Some(owner) = &owner {
                query.append_pair("owner", owner);
            }
            if let Some(days) = unused_days {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                query.append_pair("unused_since", &now.saturating_sub(u64::from(days) * 86_400).to_string());
            }
            call(&remote, "GET", format!("clients?{}", query.finish())).send("application/json", vec![])?
        }
        ClientCommand::Show { remote, client_id } => {
            call(&remote, "GET", format!("clients/{}", segment(&client_id))).send("application/json", vec![])?
        }
        ClientCommand::Disable { remote, client_id } => {
            call(&remote, "POST", format!("clients/{}/disable", segment(&client_id)))
                .send("application/json", vec![])?
        }
        ClientCommand::Enable { remote, client_id } => {
            call(&remote, "POST", format!("clients/{}/enable", segment(&client_id))).send("application/json", vec![])?
        }
        ClientCommand::DisableOwned { remote, owner } => {
            call(&remote, "POST", format!("owners/{}/disable", segment(&owner))).send("application/json", vec![])?
        }
        ClientCommand::Delete { remote, client_id } => {
            call(&remote, "DELETE", format!("clients/{}", segment(&client_id))).send("application/json", vec![])?;
            json!({ "client_id": client_id, "deleted": true })
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn call<'a>(remote: &'a Remote, method: &'static str, path: String) -> Call<'a> {
    Call { remote, method, path }
}

fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn plugin(command: PluginCommand) -> anyhow::Result<std::process::ExitCode> {
    let out = match command {
        PluginCommand::Push { remote, name, hook, no_activate, file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = format!("plugins/{name}?hook={hook}&activate={}", !no_activate);
            call(&remote, "POST", path).send("application/wasm", bytes)?
        }
        PluginCommand::List { remote } => call(&remote, "GET", "plugins".into()).send("application/json", vec![])?,
        PluginCommand::Activate { remote, name, version } => call(&remote, "POST", format!("plugins/{name}/activate"))
            .send("application/json", json!({ "version": version }).to_string().into_bytes())?,
        PluginCommand::Rollback { remote, name } => {
            call(&remote, "POST", format!("plugins/{name}/rollback")).send("application/json", vec![])?
        }
        PluginCommand::Delete { remote, name, version } => {
            let path = match version {
                Some(v) => format!("plugins/{name}/versions/{v}"),
                None => format!("plugins/{name}"),
            };
            call(&remote, "DELETE", path).send("application/json", vec![])?
        }
        PluginCommand::Test(args) => return crate::plugin_test::run(&args),
        PluginCommand::TestVersion { remote, name, version, input } => {
            let case = match input {
                Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                None => b"{}".to_vec(),
            };
            call(&remote, "POST", format!("plugins/{name}/versions/{version}/test")).send("application/json", case)?
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn realm(command: RealmCommand) -> anyhow::Result<std::process::ExitCode> {
    let json_body = |text: &str| -> anyhow::Result<Vec<u8>> {
        let value: Value = serde_json::from_str(text).context("--settings must be JSON")?;
        Ok(value.to_string().into_bytes())
    };
    let out = match command {
        RealmCommand::List { server } => {
            let remote = Remote { server, realm: String::new() };
            call(&remote, "GET", String::new()).send("application/json", vec![])?
        }
        RealmCommand::Create { remote, settings } => {
            call(&remote, "PUT", String::new()).send("application/json", json_body(&settings)?)?
        }
        RealmCommand::Show { remote } => call(&remote, "GET", String::new()).send("application/json", vec![])?,
        RealmCommand::Set { remote, settings } => {
            call(&remote, "PATCH", String::new()).send("application/json", json_body(&settings)?)?
        }
        RealmCommand::Delete { remote } => call(&remote, "DELETE", String::new()).send("application/json", vec![])?,
        RealmCommand::SetHook { remote, hook, plugin, none: _ } => call(&remote, "PUT", "hooks".into())
            .send("application/json", json!({ hook: plugin }).to_string().into_bytes())?,
        RealmCommand::Hooks { remote } => call(&remote, "GET", "hooks".into()).send("application/json", vec![])?,
        RealmCommand::Audit { remote, filter } => match filter.query(unix_now())? {
            None => call(&remote, "GET", "audit".into()).send("application/json", vec![])?,
            Some(query) => call(&remote, "GET", format!("decisions?{query}")).send("application/json", vec![])?,
        },
        RealmCommand::AddAdmin { remote, name } => call(&remote, "POST", "admins".into())
            .send("application/json", json!({ "name": name }).to_string().into_bytes())?,
        RealmCommand::Admins { remote } => call(&remote, "GET", "admins".into()).send("application/json", vec![])?,
        RealmCommand::RemoveAdmin { remote, id } => {
            call(&remote, "DELETE", format!("admins/{id}")).send("application/json", vec![])?
        }
    };
    print(&out)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Which audited decisions to list.
#[derive(Debug, clap::Args)]
pub struct DecisionFilter {
    /// List decisions rather than administrative changes.
    #[arg(long)]
    decisions: bool,
    /// Decisions about this client.
    #[arg(long, value_name = "CLIENT_ID")]
    client: Option<String>,
    /// Decisions this plugin took part in.
    #[arg(long)]
    plugin: Option<String>,
    /// ... in this version of it (with --plugin).
    #[arg(long, requires = "plugin")]
    version: Option<i64>,
    /// `allowed` or `refused`.
    #[arg(long, value_parser = ["allowed", "refused"])]
    outcome: Option<String>,
    /// From this time on: Unix seconds, or an age such as 90s, 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Before this time, as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Decisions after this id (the `next` of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

impl DecisionFilter {
    /// The admin API's query for the decisions asked for, or `None` for the
    /// log of changes.
    fn query(&self, now: i64) -> anyhow::Result<Option<String>> {
        let wanted = self.decisions
            || self.client.is_some()
            || self.plugin.is_some()
            || self.outcome.is_some()
            || self.since.is_some()
            || self.until.is_some()
            || self.after.is_some();
        if !wanted {
            return Ok(None);
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        let pairs =
            [("client_id", self.client.clone()), ("plugin", self.plugin.clone()), ("outcome", self.outcome.clone())];
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, &value);
            }
        }
        if let Some(version) = self.version {
            query.append_pair("version", &version.to_string());
        }
        for (name, time) in [("since", &self.since), ("until", &self.until)] {
            if let Some(time) = time {
                query.append_pair(name, &time_arg(time, now)?.to_string());
            }
        }
        if let Some(after) = self.after {
            query.append_pair("after", &after.to_string());
        }
        query.append_pair("limit", &self.limit.to_string());
        Ok(Some(query.finish()))
    }
}

/// Seconds since the Unix epoch, by this machine's clock.
fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A time given on the command line: Unix seconds, or an age (`90s`,
/// `15m`, `2h`, `7d`) before `now`.
fn time_arg(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let unit = |u: char| match u {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    let (number, last) = text.split_at(text.len().saturating_sub(1));
    match (number.parse::<i64>(), last.chars().next().and_then(unit)) {
        (Ok(n), Some(seconds)) if n >= 0 => Ok(now.saturating_sub(n.saturating_mul(seconds))),
        _ => anyhow::bail!("{text:?} is not a time: use Unix seconds or an age such as 90s, 15m, 2h or 7d"),
    }
}

#[cfg(test)]
mod tests {
    use super::{password_line, time_arg};

    #[test]
    fn a_password_is_the_first_line_read_without_its_end() {
        assert_eq!(password_line("hunter2-hunter2\n").unwrap(), "hunter2-hunter2");
        assert_eq!(password_line("hunter2-hunter2\r\nignored").unwrap(), "hunter2-hunter2");
        assert_eq!(password_line("no newline at all").unwrap(), "no newline at all");
        assert_eq!(password_line("  spaces kept  \n").unwrap(), "  spaces kept  ");
        for empty in ["", "\n", "\r\n"] {
            assert!(password_line(empty).is_err(), "{empty:?}");
        }
    }

    #[test]
    fn a_time_is_unix_seconds_or_an_age() {
        assert_eq!(time_arg("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(time_arg("90s", 1000).unwrap(), 910);
        assert_eq!(time_arg("2h", 10_000).unwrap(), 2_800);
        assert_eq!(time_arg("7d", 1_000_000).unwrap(), 395_200);
        for bad in ["", "h", "-1h", "3w", "yesterday"] {
            assert!(time_arg(bad, 0).is_err(), "{bad}");
        }
    }
}
