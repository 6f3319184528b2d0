//! `auth::dpop::nonce::Nonces::check` (RFC 9449 §8) on arbitrary strings at an arbitrary time:
//! never panics, and a nonce that is accepted (or refused only as expired) is one `Nonces`
//! mints — the nonce `current` hands out for its window — with that window at most one away
//! from now's. The first 8 bytes are the time (Unix seconds, big-endian), the rest the nonce.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fhirguard::auth::dpop::nonce::{NonceError, Nonces};
use libfuzzer_sys::fuzz_target;

/// The secret and lifetime of `fuzz/make-seeds.sh`.
const SECRET: &[u8] = b"fhirguard fuzz nonce secret, 32B";
const LIFETIME: u64 = 300;

fn nonces() -> &'static Nonces {
    static NONCES: OnceLock<Nonces> = OnceLock::new();
    NONCES.get_or_init(|| Nonces::new(SECRET, LIFETIME))
}

fuzz_target!(|data: &[u8]| {
    let Some((now, nonce)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(nonce) = std::str::from_utf8(nonce) else {
        return;
    };
    let now = u64::from_be_bytes(*now);
    let nonces = nonces();
    assert_eq!(nonces.check(None, now), Err(NonceError::Missing));
    let checked = nonces.check(Some(nonce), now);
    if checked == Err(NonceError::Invalid) {
        return;
    }
    // Ok or Expired: the MAC held, so it must be a minted nonce.
    let bytes = URL_SAFE_NO_PAD
        .decode(nonce)
        .expect("a nonce with a valid MAC is base64url");
    let window = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes of window"));
    if let Some(start) = window.checked_mul(LIFETIME) {
        let minted = nonces.current(start);
        assert_eq!(
            minted.to_str().ok(),
            Some(nonce),
            "not the nonce of its window"
        );
    }
    let current = now / LIFETIME;
    assert_eq!(
        checked.is_ok(),
        window.abs_diff(current) <= 1,
        "window {window} at {current}: {checked:?}"
    );
});
