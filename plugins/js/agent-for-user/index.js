// An AI agent may act for the user who signs in, as itself: the user's
// token carries `may_act` naming the agent as `(age!<client_id>)`. An agent
// never gets `admin` for a user, and asking to `write` needs the user's
// consent every time. Other clients get what they asked for, with consent
// remembered, and no `may_act`. (The same policy as plugins/agent-for-user.)

export const authorize = {
  // decide(user-view, client-view, authorization-request) -> result<decision, error>
  decide(_user, client, request) {
    if (!client.isAiAgent) {
      return { scopes: request.scopes, requireConsent: false, mayAct: undefined };
    }
    const scopes = request.scopes.filter((s) => s !== "admin");
    return {
      scopes,
      requireConsent: scopes.includes("write"),
      mayAct: { clientId: client.clientId, sub: `(age!${client.clientId})` },
    };
  },
};
