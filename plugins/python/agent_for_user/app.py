"""An AI agent may act for the user who signs in, as itself: the user's
token carries `may_act` naming the agent as `(age!<client_id>)`. An agent
never gets `admin` for a user, and asking to `write` needs the user's
consent every time. Other clients get what they asked for, with consent
remembered, and no `may_act`. (The same policy as plugins/agent-for-user.)

Build: componentize-py -d wit -w authorize-hook componentize app --stub-wasi \
           -p plugins/python/agent_for_user -o authorize.wasm
"""

from wit_world import exports
from wit_world.exports.authorize import AuthorizationRequest, Decision, MayActClaim, UserView
from wit_world.imports.types import ClientView


class Authorize(exports.Authorize):
    def decide(self, user: UserView, client: ClientView, request: AuthorizationRequest) -> Decision:
        if not client.is_ai_agent:
            return Decision(scopes=request.scopes, require_consent=False, may_act=None)
        scopes = [s for s in request.scopes if s != "admin"]
        may_act = MayActClaim(client_id=client.client_id, sub=f"(age!{client.client_id})")
        return Decision(scopes=scopes, require_consent="write" in scopes, may_act=may_act)
