//! Managing a realm's trusted issuers through the admin API: each one
//! written whole, checked as the realm's settings are, and audited.

use agentauth_core::trust::TrustedIssuer;
use serde_json::Value;

use crate::admin::{AdminError, audit};
use crate::{Service, internal};

impl Service {
    /// The realm's trusted issuers, in the order they were added.
    pub fn trusted_issuers(&self, realm: &str) -> Result<Vec<TrustedIssuer>, AdminError> {
        Ok(self.realm_settings(realm)?.trusted_issuers)
    }

    /// Adds the trusted issuer `name` to the realm, or replaces it:
    /// `issuer` is its JSON (without a name, or with the same one). True
    /// when it is new.
    pub fn put_trusted_issuer(&self, realm: &str, name: &str, issuer: Value, actor: &str) -> Result<bool, AdminError> {
        let Value::Object(mut fields) = issuer else {
            return Err(AdminError::Invalid("the body must be a JSON object describing the issuer".into()));
        };
        match fields.get("name") {
            None => {
                fields.insert("name".into(), Value::from(name));
            }
            Some(given) if given == name => {}
            Some(_) => return Err(AdminError::Invalid("the body's name differs from the URL's".into())),
        }
        let issuer: TrustedIssuer = serde_json::from_value(Value::Object(fields))
            .map_err(|e| AdminError::Invalid(format!("trusted issuer: {e}")))?;
        let mut settings = self.realm_settings(realm)?;
        let created = match settings.trusted_issuers.iter_mut().find(|t| t.name == name) {
            Some(existing) => {
                *existing = issuer.clone();
                false
            }
            None => {
                settings.trusted_issuers.push(issuer.clone());
                true
            }
        };
        settings.validate().map_err(AdminError::Invalid)?;
        let json = serde_json::to_string(&settings).map_err(internal)?;
        let detail = serde_json::to_string(&issuer).map_err(internal)?;
        let action = if created { "add-trusted-issuer" } else { "replace-trusted-issuer" };
        self.store.set_realm_settings(realm, &json, &audit(self.now(), actor, action, None, Some(detail)))?;
        self.republish_with(realm, None)?;
        tracing::info!(realm, name, issuer = %issuer.issuer, "trusted issuer {}", if created { "added" } else { "replaced" });
        Ok(created)
    }

    /// Removes the trusted issuer `name` from the realm: its tokens are
    /// refused from the next request on.
    pub fn delete_trusted_issuer(&self, realm: &str, name: &str, actor: &str) -> Result<(), AdminError> {
        let mut settings = self.realm_settings(realm)?;
        let before = settings.trusted_issuers.len();
        settings.trusted_issuers.retain(|t| t.name != name);
        if settings.trusted_issuers.len() == before {
            return Err(AdminError::NotFound(format!("no trusted issuer {name} in realm {realm}")));
        }
        // The last provider users sign in at cannot go while the realm has
        // no local login.
        settings.validate().map_err(AdminError::Invalid)?;
        let json = serde_json::to_string(&settings).map_err(internal)?;
        let detail = serde_json::json!({ "name": name }).to_string();
        let entry = audit(self.now(), actor, "remove-trusted-issuer", None, Some(detail));
        self.store.set_realm_settings(realm, &json, &entry)?;
        self.republish_with(realm, None)?;
        tracing::info!(realm, name, "trusted issuer removed");
        Ok(())
    }
}
