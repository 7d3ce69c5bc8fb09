"""The seed's "Software agent may act script" in Python: the agent may act
on its own tokens, as itself, `(age!<client_id>)`.

Build: componentize-py -d wit -w may-act-hook componentize app \
           -p plugins/python/software_agent_may_act -o may-act.wasm
"""

from typing import Optional

from wit_world import exports
from wit_world.exports.may_act import MayActClaim, TokenView
from wit_world.imports.types import ClientView


class MayAct(exports.MayAct):
    def decide(self, client: ClientView, token: TokenView) -> Optional[MayActClaim]:
        return MayActClaim(client_id=client.client_id, sub=f"(age!{client.client_id})")
