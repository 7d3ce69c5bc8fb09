//! Test fixture: a may-act plugin that misbehaves on demand, so the host's
//! fail-closed handling can be shown for each way a plugin can go wrong.
//! The client's `client_name` picks the misbehaviour, or names another
//! client the token's `may_act` should name (`delegate:<id>`,
//! `impersonate:<id>`).

wit_bindgen::generate!({
    world: "may-act-hook",
    path: "../../wit",
});

use agentauth::policy::log::{Level, write};
use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::may_act::{Guest, MayActClaim, TokenView};

struct Misbehaving;

fn client_name(client: &ClientView) -> String {
    // The metadata is JSON; a crude scan keeps this fixture free of a JSON
    // parser: `"client_name":"<mode>"`.
    let key = "\"client_name\":\"";
    client.metadata.find(key).map_or(String::new(), |i| {
        let rest = &client.metadata[i + key.len()..];
        rest[..rest.find('"').unwrap_or(rest.len())].to_string()
    })
}

impl Guest for Misbehaving {
    fn decide(client: ClientView, _token: TokenView) -> Result<Option<MayActClaim>, Error> {
        let mode = client_name(&client);
        write(Level::Info, &format!("misbehaving as {mode:?}"));
        match mode.as_str() {
            "loop" => loop {
                std::hint::black_box(());
            },
            "trap" => panic!("asked to trap"),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(Some(recurse(1))),
            "huge" => Ok(Some(MayActClaim { client_id: "x".repeat(1 << 20), sub: None })),
            // Bytes that are not UTF-8 where the contract says `string`: a
            // broken guest, simulated. The host must refuse to read it.
            #[allow(unsafe_code)]
            "bad-utf8" => Ok(Some(MayActClaim {
                client_id: unsafe { String::from_utf8_unchecked(vec![0x61, 0xff, 0xfe, 0x62]) },
                sub: None,
            })),
            "control" => Ok(Some(MayActClaim { client_id: "a\nb".into(), sub: None })),
            "deny" => Err(Error::Denied("this agent may not be delegated to".into())),
            "other" => Err(Error::Other("configuration missing".into())),
            // Words meant to forge a log line where the host writes them.
            "other-forge" => Err(Error::Other("missing\nERROR agentauth: forged line".into())),
            "read-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(Some(MayActClaim { client_id: text.chars().take(32).collect(), sub: None })),
                Err(e) => Err(Error::Other(format!("no file: {e}"))),
            },
            "read-env" => match std::env::vars().next() {
                Some((name, _)) => Ok(Some(MayActClaim { client_id: name, sub: None })),
                None => Err(Error::Other("no environment".into())),
            },
            // Waits inside a host call (a clock subscription, then a
            // blocking poll) rather than spinning: the deadline must still
            // stop it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(None)
            }
            // A blocking read of an input stream (stdin, which the host
            // links closed): it must answer at once, never wait.
            "read-stdin" => {
                use std::io::Read;
                let mut buf = [0u8; 64];
                match std::io::stdin().read(&mut buf) {
                    Ok(n) => Err(Error::Other(format!("stdin gave {n} bytes"))),
                    Err(e) => Err(Error::Other(format!("stdin: {e}"))),
                }
            }
            // Writes far more log than any policy needs.
            "log-flood" => {
                let line = "x".repeat(1000);
                for _ in 0..10_000 {
                    write(Level::Info, &line);
                }
                Ok(None)
            }
            // A message that tries to pass for log lines of its own.
            "log-forge" => {
                write(Level::Info, "ok\nINFO agentauth: forged line\r\x1b[2Kcleared");
                Ok(None)
            }
            "someone-else" => Ok(Some(MayActClaim { client_id: "someone-else".into(), sub: None })),
            // `delegate:<id>` lets client <id> act as itself on this
            // client's tokens; `impersonate:<id>` names no subject.
            _ if mode.starts_with("delegate:") => {
                let other = mode.trim_start_matches("delegate:").to_string();
                Ok(Some(MayActClaim { sub: Some(format!("(age!{other})")), client_id: other }))
            }
            _ if mode.starts_with("impersonate:") => {
                Ok(Some(MayActClaim { client_id: mode.trim_start_matches("impersonate:").into(), sub: None }))
            }
            // State kept in the instance: shows which calls shared one.
            "count" => {
                use std::sync::atomic::{AtomicU32, Ordering};
                static CALLS: AtomicU32 = AtomicU32::new(0);
                let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(Some(MayActClaim { client_id: format!("call-{n}"), sub: None }))
            }
            _ => Ok(None),
        }
    }
}

#[allow(unconditional_recursion)] // the point of this mode
fn recurse(depth: u64) -> MayActClaim {
    let claim = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(claim)
}

export!(Misbehaving);
