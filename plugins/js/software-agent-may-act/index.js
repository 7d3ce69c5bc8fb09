// The seed's "Software agent may act script" in JavaScript: the agent may
// act on its own tokens, as itself, `(age!<client_id>)`.
//
// PingAM's version: token.setMayAct({client_id: clientProperties.clientId,
//                                    sub: `(age!${clientProperties.clientId})`})

export const mayAct = {
  // decide(client-view, token-view) -> result<option<may-act-claim>, error>
  decide(client, _token) {
    return { clientId: client.clientId, sub: `(age!${client.clientId})` };
  },
};
