//! Builds the seed's two policies in `plugins/` and nothing else: the
//! binary depends on this crate, and a build of it compiles no fixture.

fn main() {
    agentauth_guest_build::build(&["software-agent-dcr", "software-agent-may-act"]);
}
