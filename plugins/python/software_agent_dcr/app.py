"""The seed's "Software agent DCR script" in Python: on CREATE, for AI
agents, enable provider overrides, name the may-act plugin and enable
stateless (JWT) tokens.

Build: componentize-py -d wit -w dcr-hook componentize app \
           -p plugins/python/software_agent_dcr -o dcr.wasm
"""

from wit_world import exports
from wit_world.exports.dcr import Decision, Operation, Registration
from wit_world.imports.types import Attribute

# The realm plugin that decides `may_act` for the agents this policy admits.
MAY_ACT_PLUGIN = "software-agent-may-act"


class Dcr(exports.Dcr):
    def evaluate(self, registration: Registration) -> Decision:
        if registration.operation == Operation.CREATE and registration.client.is_ai_agent:
            return Decision(
                set_attributes=[
                    Attribute(name="providerOverridesEnabled", values=["true"]),
                    Attribute(name="accessTokenMayActScript", values=[MAY_ACT_PLUGIN]),
                    Attribute(name="statelessTokensEnabled", values=["true"]),
                ]
            )
        return Decision(set_attributes=[])
