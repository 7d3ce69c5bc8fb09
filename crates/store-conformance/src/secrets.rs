//! The contract of [`ServerSecretRepository`]: a secret is made once and
//! then always the same, whoever asks first.

use std::sync::atomic::{AtomicUsize, Ordering};

use agentauth_core::ports::Storage;

pub fn a_server_secret_is_made_once_even_by_racing_callers<S: Storage + ?Sized>(store: &S) {
    assert!(!store.has_server_secret("hash-key").unwrap());
    let made = AtomicUsize::new(0);
    let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
        let racing: Vec<_> = (0..8u8)
            .map(|i| {
                let made = &made;
                s.spawn(move || {
                    let mut make = || {
                        made.fetch_add(1, Ordering::SeqCst);
                        vec![i; 32]
                    };
                    store.server_secret("hash-key", &mut make).unwrap()
                })
            })
            .collect();
        racing.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    assert_eq!(made.load(Ordering::SeqCst), 1, "made once");
    assert!(store.has_server_secret("hash-key").unwrap());
    assert_eq!(store.server_secret("hash-key", &mut || vec![0; 32]).unwrap(), secrets[0]);
    assert!(!store.has_server_secret("another").unwrap());
}
