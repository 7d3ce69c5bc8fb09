//! The rules of a realm's local users that need no I/O: what a username
//! may be and how it is normalised, what a user's subject looks like, and
//! the bounds of a display name and an email address.
//!
//! Usernames are ASCII (letters, digits and `.`, `_`, `-`, `@`, `+`, so an
//! email address can be one) and compared lowercased: `Alice` and `alice`
//! are one user. Keeping to ASCII spares the server Unicode's look-alikes
//! and normalisation forms (RFC 8265), where two different byte strings
//! can show as the same name; a user's name as people read it is its
//! display name, which may be anything printable.
//!
//! A user's subject is `usr_` and 128 random bits in hex, made from
//! randomness the caller gives. It cannot be a client's id (a UUID, which
//! has no `_`) nor an agent's subject (`(age!<client_id>)`), and 128
//! random bits are never drawn twice, so a deleted user's subject never
//! comes back as someone else's.

/// The longest username, in bytes (all ASCII).
pub const MAX_USERNAME: usize = 128;

/// The longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 128;

/// The longest email address, in bytes (RFC 5321's limit on a path).
pub const MAX_EMAIL: usize = 254;

/// What every user subject starts with.
pub const SUBJECT_PREFIX: &str = "usr_";

/// The username `name` normalised (lowercased), or `None` if it is not
/// one: empty, longer than [`MAX_USERNAME`], or holding anything but ASCII
/// letters, digits, `.`, `_`, `-`, `@` and `+`.
pub fn normalize_username(name: &str) -> Option<String> {
    let fits = !name.is_empty()
        && name.len() <= MAX_USERNAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b));
    fits.then(|| name.to_ascii_lowercase())
}

/// A user's subject, from 128 random bits.
pub fn user_subject(random: [u8; 16]) -> String {
    let mut subject = String::with_capacity(SUBJECT_PREFIX.len() + 32);
    subject.push_str(SUBJECT_PREFIX);
    for b in random {
        subject.push_str(&format!("{b:02x}"));
    }
    subject
}

/// Whether `subject` is shaped as [`user_subject`] makes them: a cheap
/// check that a path segment may name a user before anything is looked up.
pub fn is_user_subject(subject: &str) -> bool {
    subject
        .strip_prefix(SUBJECT_PREFIX)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Checks a display name: 1 to [`MAX_DISPLAY_NAME`] characters, none of
/// them a control character; why not, otherwise.
pub fn check_display_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(format!("display_name must be 1 to {MAX_DISPLAY_NAME} characters, with no control characters"));
    }
    Ok(())
}

/// Checks an email address, loosely: at most [`MAX_EMAIL`] bytes, one `@`
/// with something on each side, no whitespace or control characters. The
/// address is not verified to reach anyone; why not, otherwise.
pub fn check_email(email: &str) -> Result<(), String> {
    let fits = email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !fits {
        return Err(format!("email must be an address such as name@example.com, of at most {MAX_EMAIL} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_compared_lowercased() {
        assert_eq!(normalize_username("Alice").as_deref(), Some("alice"));
        assert_eq!(normalize_username("ALICE"), normalize_username("alice"));
        assert_eq!(normalize_username("Bob.Smith+ops@Example.com").as_deref(), Some("bob.smith+ops@example.com"));
        assert_eq!(normalize_username("a_b-c9").as_deref(), Some("a_b-c9"));
    }

    #[test]
    fn a_username_is_ascii_without_spaces_and_bounded() {
        let longest = "a".repeat(MAX_USERNAME);
        assert!(normalize_username(&longest).is_some());
        for bad in ["", " alice", "alice ", "al ice", "alice\n", "ålice", "аlice", "a/b", "a%20b", "a:b", "(age!x)"] {
            assert_eq!(normalize_username(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_username(&format!("{longest}a")), None);
    }

    #[test]
    fn a_user_subject_is_neither_a_client_id_nor_an_agents_subject() {
        let subject = user_subject([0xab; 16]);
        assert_eq!(subject, format!("usr_{}", "ab".repeat(16)));
        assert!(is_user_subject(&subject));
        assert_ne!(user_subject([1; 16]), user_subject([2; 16]));
        // Client ids are UUIDs; an agent's subject is `(age!<client_id>)`.
        let client_id = "0b6f3c1e-8d2a-4c5b-9e7f-1a2b3c4d5e6f";
        for other in [client_id, &format!("(age!{client_id})"), "usr_", "usr_AB", &format!("{subject}0")] {
            assert!(!is_user_subject(other), "{other}");
        }
        assert!(!subject.contains('-') && !subject.starts_with('('));
    }

    #[test]
    fn display_names_and_emails_are_bounded() {
        assert!(check_display_name("Alice Liddell").is_ok());
        assert!(check_display_name("Ålice 🦀").is_ok());
        assert!(check_display_name("").is_err());
        assert!(check_display_name("a\u{0}b").is_err());
        assert!(check_display_name(&"x".repeat(MAX_DISPLAY_NAME + 1)).is_err());
        assert!(check_email("alice@example.com").is_ok());
        for bad in ["alice", "@example.com", "alice@", "a@b@c", "a lice@example.com", "a\n@b"] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(MAX_EMAIL))).is_err());
    }
}
