"""What a token from an issuer outside the realm means here. The host has
already verified it (signature, `iss`, `aud`, lifetime, replay) against one
of the realm's trusted issuers; this policy decides who it names, with what
scopes. (The same policy as plugins/trusted-domains-assertion.)

People (`login`, `id-jag`, `jwt-bearer`, `subject-token`): only with a
verified `email` in one of TRUSTED_DOMAINS, compared exactly; the local
subject is `ext:<issuer>#<sub>`; `admin` is dropped unless the token's
`groups` include `admins`; an `agent` claim names the client that may act
for the subject (`may_act`).

Workloads (`client-authentication`): a Kubernetes service account token of
namespace WORKLOAD_NAMESPACE (`sub` = `system:serviceaccount:<ns>:<name>`)
authenticates the client it is presented for when that client's
`client_name` is `<name>`. It grants no scopes.

Build: componentize-py -d wit -w assertion-hook componentize app --stub-wasi \
           -p plugins/python/trusted_domains_assertion -o assertion.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.assertion import AssertionCase, Mapping, MayActClaim, Purpose
from wit_world.imports.types import Error_Denied

# The email domains whose users are trusted.
TRUSTED_DOMAINS = ["example.com"]
# The Kubernetes namespace whose service accounts may authenticate clients.
WORKLOAD_NAMESPACE = "agents"


class Assertion(exports.Assertion):
    def map(self, case: AssertionCase) -> Mapping:
        if case.purpose == Purpose.CLIENT_AUTHENTICATION:
            return workload(case)
        claims = json.loads(case.token.claims)
        email = claims.get("email")
        domain = email.rpartition("@")[2] if isinstance(email, str) and "@" in email else ""
        if claims.get("email_verified") is not True or domain not in TRUSTED_DOMAINS:
            raise Err(Error_Denied("only verified users of a trusted email domain"))
        groups = claims.get("groups")
        admin = isinstance(groups, list) and "admins" in groups
        scopes = [s for s in case.scopes if s != "admin" or admin]
        agent = claims.get("agent")
        may_act = MayActClaim(client_id=agent, sub=None) if isinstance(agent, str) else None
        return Mapping(subject=f"ext:{case.token.issuer}#{case.token.subject}", scopes=scopes, may_act=may_act)


def workload(case: AssertionCase) -> Mapping:
    """A Kubernetes service account authenticating the client of its name."""
    prefix = "system:serviceaccount:"
    account = case.token.subject[len(prefix):] if case.token.subject.startswith(prefix) else ""
    parts = account.split(":")
    if len(parts) != 2:
        raise Err(Error_Denied("not a Kubernetes service account"))
    namespace, name = parts
    client = case.client
    if client is None:
        raise Err(Error_Denied("no client to authenticate"))
    if namespace != WORKLOAD_NAMESPACE or json.loads(client.metadata).get("client_name") != name:
        raise Err(Error_Denied(f'this service account is not the client "{client.client_id}"'))
    return Mapping(subject=client.client_id, scopes=[], may_act=None)
