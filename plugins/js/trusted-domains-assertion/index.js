// What a token from an issuer outside the realm means here. The host has
// already verified it (signature, `iss`, `aud`, lifetime, replay) against
// one of the realm's trusted issuers; this policy decides who it names,
// with what scopes. (The same policy as plugins/trusted-domains-assertion.)
//
// People (`login`, `id-jag`, `jwt-bearer`, `subject-token`): only with a
// verified `email` in one of TRUSTED_DOMAINS, compared exactly; the local
// subject is `ext:<issuer>#<sub>`; `admin` is dropped unless the token's
// `groups` include `admins`; an `agent` claim names the client that may
// act for the subject (`may_act`).
//
// Workloads (`client-authentication`): a Kubernetes service account token
// of namespace WORKLOAD_NAMESPACE (`sub` =
// `system:serviceaccount:<ns>:<name>`) authenticates the client it is
// presented for when that client's `client_name` is `<name>`. It grants
// no scopes.

// The email domains whose users are trusted.
const TRUSTED_DOMAINS = ["example.com"];
// The Kubernetes namespace whose service accounts may authenticate clients.
const WORKLOAD_NAMESPACE = "agents";

const denied = (why) => ({ tag: "denied", val: why });

export const assertion = {
  // map(assertion-case) -> result<mapping, error>
  map(assertionCase) {
    if (assertionCase.purpose === "client-authentication") {
      return workload(assertionCase);
    }
    const { token, scopes } = assertionCase;
    const claims = JSON.parse(token.claims);
    const email = typeof claims.email === "string" ? claims.email : "";
    const domain = email.includes("@") ? email.slice(email.lastIndexOf("@") + 1) : "";
    if (claims.email_verified !== true || !TRUSTED_DOMAINS.includes(domain)) {
      throw denied("only verified users of a trusted email domain");
    }
    const admin = Array.isArray(claims.groups) && claims.groups.includes("admins");
    return {
      subject: `ext:${token.issuer}#${token.subject}`,
      scopes: scopes.filter((s) => s !== "admin" || admin),
      mayAct: typeof claims.agent === "string" ? { clientId: claims.agent, sub: undefined } : undefined,
    };
  },
};

// A Kubernetes service account authenticating the client of its name.
function workload({ token, client }) {
  const prefix = "system:serviceaccount:";
  const account = token.subject.startsWith(prefix) ? token.subject.slice(prefix.length) : "";
  const parts = account.split(":");
  if (parts.length !== 2) {
    throw denied("not a Kubernetes service account");
  }
  const [namespace, name] = parts;
  if (!client) {
    throw denied("no client to authenticate");
  }
  if (namespace !== WORKLOAD_NAMESPACE || JSON.parse(client.metadata).client_name !== name) {
    throw denied(`this service account is not the client "${client.clientId}"`);
  }
  return { subject: client.clientId, scopes: [], mayAct: undefined };
}
