//! Local users' passwords: how they are bounded, hashed and checked.
//!
//! Unlike the secrets of `secrets`, a password is chosen by a person and
//! may be guessable, so it is stored as a deliberately slow, memory-hard
//! hash: Argon2id (RFC 9106), RustCrypto's `argon2`, written as a PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) that names its
//! own parameters, so hashes made with other parameters still verify.
//!
//! # Parameters
//!
//! m = 19,456 KiB (19 MiB), t = 2 passes, p = 1 lane, a 16-byte salt from
//! the operating system's random source and a 32-byte output: the minimum
//! configuration OWASP's Password Storage Cheat Sheet recommends for
//! Argon2id (and the `argon2` crate's default). RFC 9106's own recommendations (2 GiB, or
//! 64 MiB with t = 3 and 4 lanes) are sized for a machine that does little
//! else; this server signs tokens on two cores, and at these settings one
//! hash costs 19 MiB and 10 to 25 ms of one core (as measured on those
//! machines), so a login does not starve the token endpoint. More memory would make
//! each guess dearer for an attacker with the hashes, at the price of
//! fewer logins at once; the parameters are constants here, and since a
//! PHC string names its own, raising them later leaves existing hashes
//! valid.
//!
//! # Bounds
//!
//! A password is at least [`MIN_PASSWORD_CHARS`] characters and at most
//! [`MAX_PASSWORD_BYTES`] bytes: the upper bound keeps one request from
//! buying much hashing time (Argon2 first digests the whole password).
//! At most [`MAX_HASHES_IN_FLIGHT`] hashes run at once, server-wide, so a
//! burst of logins holds at most that many 19 MiB blocks; past it the
//! caller is told to retry.
//!
//! # Secrecy
//!
//! A [`Password`] prints as `[redacted]`, is never serialised, and no
//! error message quotes it. Checking a password against no user (the
//! username is unknown) runs the same hash against a dummy of the same
//! parameters, so the time a login takes does not tell whether a user
//! exists.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::secrets::random_bytes;

/// Memory per hash, KiB (OWASP's 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Passes over the memory.
pub const PASSES: u32 = 2;
/// Lanes (degree of parallelism): one, so one hash takes one core.
pub const LANES: u32 = 1;
/// Bytes of salt, drawn afresh for every hash.
const SALT_BYTES: usize = 16;
/// Bytes of output.
const OUTPUT_BYTES: usize = 32;

/// The fewest characters a password may have: 8, the floor of NIST SP
/// 800-63B revision 3. Revision 4 asks 15 of a password that is the only
/// factor, as these are until users have a second one; raising it is this
/// constant.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The most bytes a password may have, bounding what one hash costs.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The most hashes computed at once, server-wide: each holds
/// [`MEMORY_KIB`] of memory while it runs.
pub const MAX_HASHES_IN_FLIGHT: usize = 8;

/// A password as given by a person: never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Self {
        Self(password)
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether the password is within the bounds a password may be set to;
    /// why not, otherwise, in words that never quote it.
    pub fn check(&self) -> Result<(), String> {
        if self.0.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!("the password must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        if self.0.len() > MAX_PASSWORD_BYTES {
            return Err(format!("the password must be at most {MAX_PASSWORD_BYTES} bytes"));
        }
        if self.0.chars().any(char::is_control) {
            return Err("the password must not hold control characters".into());
        }
        Ok(())
    }

    /// Whether a password of this length could have been set at all: one
    /// that could not is refused at login without hashing it.
    fn could_be_set(&self) -> bool {
        !self.0.is_empty() && self.0.len() <= MAX_PASSWORD_BYTES
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a password could not be hashed or checked.
#[derive(Debug, PartialEq, Eq)]
pub enum HashError {
    /// [`MAX_HASHES_IN_FLIGHT`] hashes are running: retry shortly.
    Busy,
    /// The hash function failed, or a stored hash cannot be read (logged
    /// where it happened, without the password).
    Failed(String),
}

/// Hashes and checks passwords with Argon2id, at most
/// [`MAX_HASHES_IN_FLIGHT`] at once.
pub struct Passwords {
    argon2: Argon2<'static>,
    /// Hashes running now.
    in_flight: AtomicUsize,
    /// A hash of a random password, made on first need, to check against
    /// when there is no user.
    dummy: OnceLock<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("in_flight", &self.in_flight.load(Ordering::Relaxed)).finish()
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params()),
            in_flight: 0.into(),
            dummy: OnceLock::new(),
        }
    }
}

/// The parameters of every hash this server makes.
fn params() -> Params {
    match Params::new(MEMORY_KIB, PASSES, LANES, Some(OUTPUT_BYTES)) {
        Ok(params) => params,
        // The constants above are within Argon2's ranges (a test checks).
        Err(_) => Params::DEFAULT,
    }
}

/// One of the [`MAX_HASHES_IN_FLIGHT`] places, given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Passwords {
    fn slot(&self) -> Result<Slot<'_>, HashError> {
        let slot = Slot(&self.in_flight);
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_HASHES_IN_FLIGHT {
            return Err(HashError::Busy);
        }
        Ok(slot)
    }

    /// Hashes `password` with a fresh salt: its PHC string.
    pub fn hash(&self, password: &Password) -> Result<String, HashError> {
        let _slot = self.slot()?;
        self.hash_unbounded(password)
    }

    fn hash_unbounded(&self, password: &Password) -> Result<String, HashError> {
        let salt = random_bytes::<SALT_BYTES>();
        let hash = self
            .argon2
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| HashError::Failed(format!("hashing a password: {e}")))?;
        Ok(hash.to_string())
    }

    /// Whether `password` is the one `stored` (a PHC string) was made
    /// from, in the time a hash takes whatever the answer. A password no
    /// one could have set is refused without hashing; that takes no time,
    /// and tells nothing about any user.
    pub fn verify(&self, password: &Password, stored: &str) -> Result<bool, HashError> {
        if !password.could_be_set() {
            return Ok(false);
        }
        let _slot = self.slot()?;
        match self.argon2.verify_password(password.as_bytes(), stored) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(HashError::Failed(format!("checking a password against its stored hash: {e}"))),
        }
    }

    /// Spends the time [`Passwords::verify`] would, against no user: the
    /// answer is always no.
    pub fn verify_nobody(&self, password: &Password) -> Result<bool, HashError> {
        if !password.could_be_set() {
            return Ok(false);
        }
        let dummy = match self.dummy.get() {
            Some(dummy) => dummy,
            None => {
                let made = self.hash_unbounded(&Password::new(crate::secrets::new_secret()))?;
                self.dummy.get_or_init(|| made)
            }
        };
        self.verify(password, dummy).map(|_| false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn password(text: &str) -> Password {
        Password::new(text.into())
    }

    #[test]
    fn the_parameters_are_owasps_and_argon2_accepts_them() {
        let made = Params::new(MEMORY_KIB, PASSES, LANES, Some(OUTPUT_BYTES)).expect("valid parameters");
        assert_eq!((made.m_cost(), made.t_cost(), made.p_cost()), (19 * 1024, 2, 1));
    }

    #[test]
    fn a_hash_is_an_argon2id_phc_string_that_verifies_its_password_only() {
        let passwords = Passwords::default();
        let hash = passwords.hash(&password("correct horse battery")).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(passwords.verify(&password("correct horse battery"), &hash).unwrap());
        assert!(!passwords.verify(&password("correct horse battery!"), &hash).unwrap());
        assert!(!passwords.verify(&password("Correct horse battery"), &hash).unwrap());
        // Each hash has its own salt.
        assert_ne!(passwords.hash(&password("correct horse battery")).unwrap(), hash);
    }

    #[test]
    fn a_hash_made_with_other_parameters_still_verifies() {
        let weaker = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(1024, 1, 1, None).unwrap());
        let hash = weaker.hash_password_with_salt(b"an older password", &[7; 16]).unwrap().to_string();
        let passwords = Passwords::default();
        assert!(passwords.verify(&password("an older password"), &hash).unwrap());
        assert!(!passwords.verify(&password("another password"), &hash).unwrap());
    }

    #[test]
    fn an_unreadable_stored_hash_is_a_failure_not_a_match() {
        let passwords = Passwords::default();
        for stored in ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA"] {
            let failed = passwords.verify(&password("whatever password"), stored);
            assert!(matches!(failed, Err(HashError::Failed(ref why)) if !why.contains("whatever")), "{failed:?}");
        }
    }

    #[test]
    fn checking_against_nobody_takes_as_long_as_against_a_user() {
        let passwords = Passwords::default();
        let hash = passwords.hash(&password("the user's password")).unwrap();
        assert!(!passwords.verify_nobody(&password("the user's password")).unwrap());
        // The best of several runs each, taken in turns after a first round
        // (the allocator settles on where 19 MiB blocks come from), so that
        // neither a busy machine nor the order decides.
        let timed = |f: &dyn Fn()| {
            let start = Instant::now();
            f();
            start.elapsed()
        };
        let against_user = || assert!(!passwords.verify(&password("a wrong password"), &hash).unwrap());
        let against_nobody = || assert!(!passwords.verify_nobody(&password("a wrong password")).unwrap());
        let (mut user, mut nobody) = (Duration::MAX, Duration::MAX);
        for round in 0..9 {
            let (u, n) = (timed(&against_user), timed(&against_nobody));
            if round > 0 {
                (user, nobody) = (user.min(u), nobody.min(n));
            }
        }
        let (low, high) = if user < nobody { (user, nobody) } else { (nobody, user) };
        assert!(low >= Duration::from_millis(1), "a real hash takes time: {low:?}");
        // Within a factor that a loaded machine cannot stretch a real hash
        // past, and that skipping the hash would be far outside.
        assert!(high.as_secs_f64() < low.as_secs_f64() * 2.0, "user {user:?}, nobody {nobody:?}");
    }

    #[test]
    fn a_password_is_bounded_and_never_printed() {
        assert!(password("12345678").check().is_ok());
        assert!(password("ÅÅÅÅÅÅÅÅ").check().is_ok(), "eight characters, sixteen bytes");
        assert!(password(&"x".repeat(MAX_PASSWORD_BYTES)).check().is_ok());
        for bad in ["", "1234567", "tab\tin password"] {
            let why = password(bad).check().unwrap_err();
            assert!(bad.is_empty() || !why.contains(bad), "{why}");
        }
        assert!(password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).check().is_err());
        let secret = password("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
    }

    #[test]
    fn a_password_no_one_could_set_is_refused_without_hashing() {
        let passwords = Passwords::default();
        let hash = passwords.hash(&password("a real password")).unwrap();
        for never in [String::new(), "x".repeat(MAX_PASSWORD_BYTES + 1)] {
            let start = Instant::now();
            assert!(!passwords.verify(&password(&never), &hash).unwrap());
            assert!(!passwords.verify_nobody(&password(&never)).unwrap());
            assert!(start.elapsed() < Duration::from_millis(5));
        }
    }

    #[test]
    fn past_the_hashes_in_flight_a_caller_is_told_to_retry() {
        let passwords = Passwords::default();
        let held: Vec<_> = (0..MAX_HASHES_IN_FLIGHT).map(|_| passwords.slot().unwrap()).collect();
        assert_eq!(passwords.hash(&password("one too many")), Err(HashError::Busy));
        assert_eq!(passwords.verify(&password("one too many"), "$argon2id$..."), Err(HashError::Busy));
        drop(held);
        assert!(passwords.hash(&password("room again now")).is_ok());
        assert_eq!(passwords.in_flight.load(Ordering::SeqCst), 0, "every place given back");
    }
}
