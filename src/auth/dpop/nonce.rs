//! DPoP server nonces (RFC 9449 §8, §9): with `senderConstraints.dpop.nonce.required`, a proof
//! must carry a `nonce` claim that fhirguard issued recently, which bounds how long a proof made
//! in advance (or captured) stays usable, and closes the replay gap between replicas that the
//! per-process replay cache leaves ([`crate::proxy::replay`]).
//!
//! **Stateless.** A nonce is `base64url(window ‖ HMAC-SHA256(secret, label ‖ lifetime ‖
//! window)[..16])`, where `window` is the Unix time divided by the lifetime: any process holding
//! the secret mints and accepts the same nonces, with nothing stored or shared per client. A
//! nonce is accepted in its own window and the next (so it lives between one and two lifetimes),
//! and one window early, for a replica whose clock runs a little ahead. The MAC is compared in
//! constant time.
//!
//! The secret is `secretFile`'s bytes, so that replicas agree; without one, a random secret of
//! this process ([`process_secret`]), kept across reloads: each replica then issues its own
//! nonces, and a client sent to another replica is asked for a nonce again.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};

use crate::config::NonceSettings;

/// The `DPoP-Nonce` response header (RFC 9449 §8.1).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Domain separation of the MAC input: the secret may serve nothing else, but a nonce MAC must
/// never be confused with another use of it.
const LABEL: &[u8] = b"fhirguard DPoP nonce v1";
const WINDOW_BYTES: usize = 8;
/// 128 bits of the MAC: forging one is a 2^-128 guess per try.
const TAG_BYTES: usize = 16;
const NONCE_BYTES: usize = WINDOW_BYTES + TAG_BYTES;
/// base64url without padding of [`NONCE_BYTES`] bytes.
const NONCE_CHARS: usize = NONCE_BYTES / 3 * 4;

/// Why a proof's nonce was refused (401 `use_dpop_nonce`, RFC 9449 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// The proof has no `nonce` claim (§8: the server requires one).
    #[error("The DPoP proof has no nonce")]
    Missing,
    /// A nonce fhirguard issued, but for a window that is over (or far ahead).
    #[error("The DPoP proof's nonce has expired")]
    Expired,
    /// Not a nonce of this secret: forged, garbled, or minted with another secret or lifetime.
    #[error("The DPoP proof's nonce was not issued by this server")]
    Invalid,
}

impl NonceError {
    /// A bounded label for metrics and the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            NonceError::Missing => "dpop_nonce_missing",
            NonceError::Expired => "dpop_nonce_expired",
            NonceError::Invalid => "dpop_nonce_invalid",
        }
    }
}

/// Mints and checks nonces under one secret and lifetime, and keeps the current window's nonce
/// so that it is computed once per window, not per request.
pub struct Nonces {
    key: hmac::Key,
    /// Seconds, at least 1.
    lifetime: u64,
    current: ArcSwapOption<Minted>,
}

/// A window's nonce, ready to be sent.
#[derive(Debug)]
struct Minted {
    window: u64,
    value: HeaderValue,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Nonces")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The random secret of this process, for nonces without `secretFile`: the same for every
/// generation of the configuration, so a reload does not void the nonces clients hold.
pub fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

impl Nonces {
    /// Nonces under `secret`, each window `lifetime_seconds` long (at least 1).
    pub fn new(secret: &[u8], lifetime_seconds: u64) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime: lifetime_seconds.max(1),
            current: ArcSwapOption::empty(),
        }
    }

    /// The nonces of validated settings: `secretFile`'s secret, else [`process_secret`].
    pub fn of(settings: &NonceSettings) -> Nonces {
        let secret = settings
            .secret
            .as_ref()
            .map_or(&process_secret()[..], |secret| secret.bytes());
        Nonces::new(secret, settings.lifetime.as_secs())
    }

    fn window(&self, now: u64) -> u64 {
        now / self.lifetime
    }

    /// The truncated MAC of `window`.
    fn tag(&self, window: u64) -> [u8; TAG_BYTES] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(LABEL);
        context.update(&self.lifetime.to_be_bytes());
        context.update(&window.to_be_bytes());
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&context.sign().as_ref()[..TAG_BYTES]);
        tag
    }

    fn mint(&self, window: u64) -> String {
        let mut bytes = [0; NONCE_BYTES];
        bytes[..WINDOW_BYTES].copy_from_slice(&window.to_be_bytes());
        bytes[WINDOW_BYTES..].copy_from_slice(&self.tag(window));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The nonce to hand out at `now` (Unix seconds), computed once per window.
    pub fn current(&self, now: u64) -> HeaderValue {
        let window = self.window(now);
        if let Some(minted) = &*self.current.load() {
            if minted.window == window {
                return minted.value.clone();
            }
        }
        // Two requests at a window's start may both mint it: the same value, stored twice.
        let value =
            HeaderValue::from_str(&self.mint(window)).expect("base64url is a valid header value");
        self.current.store(Some(Arc::new(Minted {
            window,
            value: value.clone(),
        })));
        value
    }

    /// Whether `nonce` (the proof's `nonce` claim, if any) is valid at `now`.
    pub fn check(&self, nonce: Option<&str>, now: u64) -> Result<(), NonceError> {
        let nonce = nonce.ok_or(NonceError::Missing)?;
        if nonce.len() != NONCE_CHARS {
            return Err(NonceError::Invalid);
        }
        let mut bytes = [0; NONCE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut bytes) {
            Ok(NONCE_BYTES) => {}
            _ => return Err(NonceError::Invalid),
        }
        let (window, tag) = bytes.split_at(WINDOW_BYTES);
        let mut number = [0; WINDOW_BYTES];
        number.copy_from_slice(window);
        let window = u64::from_be_bytes(number);
        constant_time::verify_slices_are_equal(&self.tag(window), tag)
            .map_err(|_| NonceError::Invalid)?;
        let current = self.window(now);
        // Its own window and the next; one early for a replica whose clock runs ahead.
        if window.saturating_add(1) < current || window > current.saturating_add(1) {
            return Err(NonceError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn nonces() -> Nonces {
        Nonces::new(SECRET, 300)
    }

    #[test]
    fn a_nonce_is_valid_in_its_window_and_the_next() {
        let nonces = nonces();
        let nonce = nonces.current(NOW);
        let nonce = nonce.to_str().unwrap();
        assert_eq!(nonce.len(), NONCE_CHARS);
        assert_eq!(nonces.check(Some(nonce), NOW), Ok(()));
        // The previous window's nonce, at the start and the end of the current window.
        let window_start = NOW / 300 * 300;
        let previous = nonces.current(window_start - 1);
        let previous = previous.to_str().unwrap();
        assert_ne!(previous, nonce);
        assert_eq!(nonces.check(Some(previous), window_start), Ok(()));
        assert_eq!(nonces.check(Some(previous), window_start + 299), Ok(()));
        // A replica a little ahead issued the next window's.
        let next = nonces.mint(NOW / 300 + 1);
        assert_eq!(nonces.check(Some(&next), NOW), Ok(()));
    }

    #[test]
    fn an_older_or_far_ahead_nonce_has_expired() {
        let nonces = nonces();
        let nonce = nonces.mint(NOW / 300);
        assert_eq!(
            nonces.check(Some(&nonce), NOW + 600),
            Err(NonceError::Expired)
        );
        let ahead = nonces.mint(NOW / 300 + 2);
        assert_eq!(nonces.check(Some(&ahead), NOW), Err(NonceError::Expired));
    }

    #[test]
    fn forged_garbled_and_foreign_nonces_are_invalid() {
        let nonces = nonces();
        let nonce = nonces.mint(NOW / 300);
        assert_eq!(nonces.check(None, NOW), Err(NonceError::Missing));
        // The window of another, the MAC of this one.
        let mut bytes = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        bytes[7] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(&bytes);
        // One bit of the MAC.
        let mut bytes = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        bytes[NONCE_BYTES - 1] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        let other_secret = Nonces::new(b"another secret, also 32 bytes...", 300).mint(NOW / 300);
        let other_lifetime = Nonces::new(SECRET, 600).mint(NOW / 300);
        for bad in [
            moved.as_str(),
            &forged,
            &other_secret,
            &other_lifetime,
            &nonce[..NONCE_CHARS - 1],
            &format!("{nonce}A"),
            "",
            "not a nonce at all, just text...",
            &"é".repeat(16),
            "////////////////////////////////",
        ] {
            assert_eq!(
                nonces.check(Some(bad), NOW),
                Err(NonceError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_current_nonce_is_kept_for_its_window() {
        let nonces = nonces();
        let first = nonces.current(NOW);
        assert_eq!(nonces.current(NOW + 1), first);
        assert_eq!(
            nonces.current.load().as_ref().map(|m| m.window),
            Some(NOW / 300)
        );
        assert_ne!(nonces.current(NOW + 300), first);
    }

    #[test]
    fn without_a_secret_file_the_process_secret_serves() {
        use std::time::Duration;
        let settings = NonceSettings {
            lifetime: Duration::from_secs(300),
            secret: None,
        };
        let (a, b) = (Nonces::of(&settings), Nonces::of(&settings));
        let nonce = a.current(NOW);
        assert_eq!(b.check(nonce.to_str().ok(), NOW), Ok(()));
    }
}
