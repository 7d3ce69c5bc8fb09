//! Test fixture: a may-act plugin that tries to reach the network. Using
//! `std::net` makes the component import `wasi:sockets`, which the host
//! refuses by name at upload, before the plugin can ever run.

wit_bindgen::generate!({
    world: "may-act-hook",
    path: "../../wit",
});

use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::may_act::{Guest, MayActClaim, TokenView};

struct Nosy;

impl Guest for Nosy {
    fn decide(client: ClientView, _token: TokenView) -> Result<Option<MayActClaim>, Error> {
        match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => Ok(Some(MayActClaim { client_id: client.client_id, sub: Some("exfiltrated".into()) })),
            Err(e) => Err(Error::Other(format!("no network: {e}"))),
        }
    }
}

export!(Nosy);
