//! Builds the example plugins and test fixtures in `plugins/`; the seed's
//! two policies are `agentauth-seed-policies`' to build.

fn main() {
    agentauth_guest_build::build(&[
        "department-token",
        "narrowing-scope",
        "misbehaving-dcr",
        "misbehaving-may-act",
        "nosy-may-act",
        "bench-dcr",
        "agent-for-user",
        "trusted-domains-assertion",
        "misbehaving-assertion",
    ]);
}
