// The seed's "Software agent DCR script" in JavaScript: on CREATE, for AI
// agents, enable provider overrides, name the may-act plugin and enable
// stateless (JWT) tokens.

// The realm plugin that decides `may_act` for the agents this policy admits.
const MAY_ACT_PLUGIN = "software-agent-may-act";

export const dcr = {
  // evaluate(registration) -> result<decision, error>
  evaluate(registration) {
    if (registration.operation === "create" && registration.client.isAiAgent) {
      return {
        setAttributes: [
          { name: "providerOverridesEnabled", values: ["true"] },
          { name: "accessTokenMayActScript", values: [MAY_ACT_PLUGIN] },
          { name: "statelessTokensEnabled", values: ["true"] },
        ],
      };
    }
    return { setAttributes: [] };
  },
};
