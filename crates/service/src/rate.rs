//! Rate limits on registration and login, per realm, per source and per
//! name (a username tried): token buckets held in memory, refilled
//! continuously. A refused request is told how long to wait (429 with
//! `Retry-After`). A source is counted as the connection caps count it:
//! an IPv4 address, or an IPv6 /64, since one host may use every address
//! of its /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Whom a per-source limit counts together: an IPv4 address, or the
/// first 64 bits of an IPv6 one (an IPv4-mapped IPv6 address counts as its
/// IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits.
    V6([u16; 4]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => {
                    let s = v6.segments();
                    Self::V6([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

/// Most sources tracked at once; idle ones are forgotten past this.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by a name (a realm, say) and, for per-source
/// limits, source.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, Option<Source>), Bucket>>,
}

impl RateLimiter {
    /// Takes one token from the realm's bucket and the source's, each
    /// allowing `per_minute` requests a minute in bursts of as many. On
    /// refusal, returns the seconds to wait; nothing is taken then.
    pub fn take(
        &self,
        realm: &str,
        source: Option<IpAddr>,
        realm_per_minute: u32,
        source_per_minute: u32,
    ) -> Result<(), u64> {
        let mut buckets = vec![(realm, None, realm_per_minute)];
        if let Some(ip) = source {
            buckets.push((realm, Some(ip), source_per_minute));
        }
        self.take_each(&buckets)
    }

    /// Takes one token from each bucket named, all or none: a bucket is a
    /// name, with a source for a per-source bucket, and allows its
    /// `per_minute` requests a minute in bursts of as many. On refusal,
    /// returns the seconds to wait (the longest any refusing bucket asks);
    /// nothing is taken then.
    pub fn take_each(&self, wanted: &[(&str, Option<IpAddr>, u32)]) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_TRACKED {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs() < 60);
        }
        let keys: Vec<_> = wanted
            .iter()
            .map(|(name, source, per_minute)| ((name.to_string(), source.map(Source::from)), *per_minute))
            .collect();
        let mut refilled = Vec::with_capacity(keys.len());
        let mut wait: Option<u64> = None;
        for (key, per_minute) in &keys {
            let capacity = f64::from(*per_minute);
            let bucket = buckets.get(key).copied().unwrap_or(Bucket { tokens: capacity, updated: now });
            let elapsed = now.duration_since(bucket.updated).as_secs_f64();
            let tokens = (bucket.tokens + elapsed * capacity / 60.0).min(capacity);
            if tokens < 1.0 {
                let seconds = ((1.0 - tokens) * 60.0 / capacity).ceil().max(1.0) as u64;
                wait = wait.max(Some(seconds));
            }
            refilled.push((key.clone(), tokens));
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (key, tokens) in refilled {
            buckets.insert(key, Bucket { tokens: tokens - 1.0, updated: now });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limiter = RateLimiter::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            limiter.take("alpha", Some(ip), 100, 3).unwrap();
        }
        let wait = limiter.take("alpha", Some(ip), 100, 3).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        // Another source, and another realm, have their own buckets.
        limiter.take("alpha", Some([10, 0, 0, 1].into()), 100, 3).unwrap();
        limiter.take("beta", Some(ip), 100, 3).unwrap();
    }

    #[test]
    fn the_realm_limit_binds_every_source_together() {
        let limiter = RateLimiter::default();
        for i in 0..2u8 {
            limiter.take("alpha", Some([10, 0, 0, i].into()), 2, 100).unwrap();
        }
        assert!(limiter.take("alpha", Some([10, 0, 0, 9].into()), 2, 100).is_err());
    }

    #[test]
    fn named_buckets_are_taken_all_or_none() {
        let limiter = RateLimiter::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        // A source's bucket, and a bucket per name tried from it.
        for _ in 0..2 {
            limiter.take_each(&[("alpha", Some(ip), 3), ("alpha/alice", None, 2)]).unwrap();
        }
        let wait = limiter.take_each(&[("alpha", Some(ip), 3), ("alpha/alice", None, 2)]).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        // The refusal took nothing from the source's bucket: one is left.
        limiter.take_each(&[("alpha", Some(ip), 3), ("alpha/bob", None, 2)]).unwrap();
        let wait = limiter.take_each(&[("alpha", Some(ip), 3), ("alpha/carol", None, 2)]).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        // A name's bucket holds whatever the source.
        assert!(limiter.take_each(&[("alpha/alice", None, 2)]).is_err());
        limiter.take_each(&[("alpha/carol", None, 2)]).unwrap();
    }

    #[test]
    fn addresses_of_one_ipv6_slash_64_share_a_source_bucket() {
        let limiter = RateLimiter::default();
        let ip = |text: &str| text.parse::<IpAddr>().ok();
        limiter.take("alpha", ip("2001:db8:1:2::1"), 100, 2).unwrap();
        limiter.take("alpha", ip("2001:db8:1:2::ffff"), 100, 2).unwrap();
        assert!(limiter.take("alpha", ip("2001:db8:1:2:aaaa::9"), 100, 2).is_err(), "one /64, one bucket");
        limiter.take("alpha", ip("2001:db8:1:3::1"), 100, 2).unwrap();
    }
}
