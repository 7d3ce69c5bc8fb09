//! Which IP addresses the server may connect to on someone else's behalf.
//!
//! Pure functions over [`IpAddr`], so the rules read as a table and are
//! tested without a network. An address is *public* when it is ordinary
//! unicast on the open internet: none of the special-purpose ranges of
//! IANA's registries (RFC 6890 and its updates) that reach the server's own
//! host, its private networks, its cloud's metadata service, or nothing at
//! all.
//!
//! IPv4 is refused by range (the space is allocated almost to the end):
//!
//! | range            | what it is                                   |
//! |------------------|----------------------------------------------|
//! | 0.0.0.0/8        | "this network", 0.0.0.0 itself               |
//! | 10.0.0.0/8       | private (RFC 1918)                           |
//! | 100.64.0.0/10    | carrier-grade NAT, shared (RFC 6598)         |
//! | 127.0.0.0/8      | loopback                                     |
//! | 169.254.0.0/16   | link-local, cloud metadata (169.254.169.254) |
//! | 172.16.0.0/12    | private (RFC 1918)                           |
//! | 192.0.0.0/24     | IETF protocol assignments                    |
//! | 192.0.2.0/24     | documentation (TEST-NET-1)                   |
//! | 192.88.99.0/24   | 6to4 relay anycast, deprecated               |
//! | 192.168.0.0/16   | private (RFC 1918)                           |
//! | 198.18.0.0/15    | benchmarking                                 |
//! | 198.51.100.0/24  | documentation (TEST-NET-2)                   |
//! | 203.0.113.0/24   | documentation (TEST-NET-3)                   |
//! | 224.0.0.0/4      | multicast                                    |
//! | 240.0.0.0/4      | reserved, and 255.255.255.255 broadcast      |
//!
//! IPv6 is allowed by range instead: only global unicast, 2000::/3, minus
//! its special blocks (2001::/23 IETF assignments with Teredo, 2001:db8::/32
//! and 3fff::/20 documentation, 2002::/16 6to4). That leaves out
//! unspecified and loopback, IPv4-compatible `::a.b.c.d`, discard-only,
//! unique-local fc00::/7, link-local fe80::/10, site-local, multicast, and
//! whatever IANA assigns outside 2000::/3 next. Two forms carry an IPv4
//! address and are judged by it: IPv4-mapped `::ffff:a.b.c.d` (a socket
//! connects to the IPv4 address itself) and the NAT64 prefix
//! `64:ff9b::/96` (a translator connects to it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a public unicast address (see the module's tables).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// Whether `ip` is this host's loopback: 127.0.0.0/8, `::1`, or
/// 127.0.0.0/8 in its IPv4-mapped form.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0
        || a == 10
        || (a == 100 && (64..=127).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224;
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let global_unicast = s[0] & 0xe000 == 0x2000;
    // 2001::/23 (IETF assignments) and 2001:db8::/32 (documentation).
    let special = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
        || s[0] == 0x2002
        || (s[0] == 0x3fff && s[1] & 0xf000 == 0);
    global_unicast && !special
}

/// The IPv4 address an IPv4-mapped or NAT64 (64:ff9b::/96) address stands
/// for.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn ordinary_internet_addresses_are_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(public(ip), "{ip} should be public");
        }
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.9",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.7",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "5f00::1",
        ] {
            assert!(!public(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn loopback_is_127_slash_8_and_colon_colon_1_in_any_form() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "0.0.0.0", "::", "169.254.169.254", "fe80::1", "64:ff9b::127.0.0.1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
