//! What one DPoP proof's signature check costs, by algorithm (issue 23 item 3): one ES256
//! (P-256), one EdDSA (Ed25519) and one RS256 (RSA-2048) verification with aws-lc-rs, through a
//! [`ParsedPublicKey`] parsed once, as `auth::dpop::key` verifies a proof whose key it has
//! read before. Two references run in the same process: the SHA-256 of a 1 KiB token with
//! aws-lc-rs (an `ath` or a token-cache key) and the `serde_json` parse of a proof's claims
//! (pure Rust, the same code on every CPU).
//!
//! ```text
//! signatures time [ROUNDS]     native time per operation: the fastest of ROUNDS (default 15)
//!                              batches of about 20 ms each
//! signatures count KIND N      KIND N times and nothing else: run under callgrind twice, the
//!                              difference over the extra count is one operation's instructions
//! ```
//!
//! KIND is one of `es256`, `eddsa`, `rs256`, `sha256-1k`, `json`. aws-lc picks its P-256,
//! Ed25519 and RSA code by the CPU features it reads (ADX and BMI2 for the `mulx`/`adcx`
//! paths, AVX-512 IFMA, SHA-NI); `OPENSSL_ia32cap` masks them (`~` clears bits; the part after
//! `:` is CPUID leaf 7's EBX, where ADX is bit 19 and BMI2 bit 8), so
//! `OPENSSL_ia32cap=:~0x80100 signatures time` times the code a CPU without ADX/BMI2 runs.
//!
//! Under callgrind (`signatures count KIND 20` and `… 520`, the difference over 500):
//!
//! ```sh
//! cargo build --release --example signatures
//! for n in 20 520; do valgrind --tool=callgrind --callgrind-out-file=/tmp/sig.$n.out \
//!     target/release/examples/signatures count es256 $n; done
//! callgrind_annotate /tmp/sig.520.out | grep 'PROGRAM TOTALS'   # minus the 20 run's, ÷ 500
//! target/release/examples/signatures time                        # native
//! OPENSSL_ia32cap=:0x407AA target/release/examples/signatures time   # valgrind's code paths
//! ```
//!
//! Last results (2026-12-07; AMD EPYC (Zen 4, family 25), 2 vCPUs shared with other work;
//! valgrind 3.19; aws-lc-sys 0.47): valgrind shows aws-lc CPUID leaf 7 EBX `0x427AA` (read
//! natively: `0xF1BF07AB`): no ADX, no SHA-NI, no AVX-512, so under callgrind P-256 runs
//! `__ecp_nistz256_mul_montq` (not the `…x` ADX code), Ed25519 s2n-bignum's `_alt` code, RSA
//! `bn_sqr8x_internal` (not `bn_sqrx8x_internal`) and SHA-256 its AVX code. `:0x407AA`, the
//! two ANDed (aws-lc aborts when asked for a bit the CPU lacks, so valgrind cannot be asked for
//! ADX either), gives the native process that same view: it times the code callgrind counts.
//!
//! | operation | callgrind, instructions | native, µs | native on valgrind's paths, µs | native ÷ valgrind's paths |
//! |---|---:|---:|---:|---:|
//! | ES256 verify | 729,425 | 49.4 | 54.3 | 0.91 |
//! | EdDSA verify | 488,163 | 37.1 | 44.3 | 0.84 |
//! | RS256 verify | 289,131 | 15.5 | 22.2 | 0.70 |
//! | SHA-256, 1 KiB | 35,915 | 0.61 | 2.14 | 0.29 |
//! | JSON claims parse | 5,494 | 0.36 | 0.36 | 1.00 |
//!
//! So callgrind's ES256 figure is the real cost within 10 %: counted against the JSON parse,
//! which is the same code everywhere, ES256 is 133 parses under callgrind and 135 natively.
//! `benches/README.md` ("the DPoP path") has the request rows (`callgrind.sh` `dpop`,
//! `dpop-eddsa`, `dpop-rs256`).

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, ED25519,
    RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A proof's signing input as a client sends it: base64url header (an ES256 `jwk`) `.`
/// base64url claims; the same bytes are signed by every algorithm.
const SIGNING_INPUT: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7ImNydiI6IlAtMjU2Iiwia3R5IjoiRUMiLCJ4IjoiNVZXUWVHbmJ3cG1nWnVfcnNOR3lBZjFDenp5Y0dtSlQ2QWxFX3VDSjRNSSIsInkiOiJ1V3dTUkZ3dVFhZUJHUlFKdXg4Y09lQmlEX2V2dGFDTXBHNm1wYjJpd0JJIn19.eyJqdGkiOiJiZW5jaC0xNzY1MTA2MDAwMDAwMDAwMDAwLTAiLCJodG0iOiJHRVQiLCJodHUiOiJodHRwOi8vMTI3LjAuMC4xOjE4MTgwL1BhdGllbnQvMSIsImlhdCI6MTc2NTEwNjAwMCwiYXRoIjoiZlVIeU8yckpxWGpFUEQ5bFh6ZGJnWXN1WXhuVEgzREFnRzJQZ3JhMHJWQSJ9";

/// A proof's claims (RFC 9449 §4.2), as `serde_json` reads them on every request.
const CLAIMS: &str = r#"{"jti":"bench-1765106000000000000-0","htm":"GET","htu":"http://127.0.0.1:18180/Patient/1","iat":1765106000,"ath":"fUHyO2rJqXjEPD9lXzdbgYsuYxnTH3DAgG2Pgra0rVA"}"#;

/// The operations measured, each returning something the optimiser must keep.
enum Operation {
    Verify(ParsedPublicKey, Vec<u8>),
    Sha256(Vec<u8>),
    Json,
}

impl Operation {
    fn run(&self) -> bool {
        match self {
            Operation::Verify(key, signature) => key
                .verify_sig(black_box(SIGNING_INPUT.as_bytes()), black_box(signature))
                .is_ok(),
            Operation::Sha256(token) => {
                black_box(digest(&SHA256, black_box(token))).as_ref().len() == 32
            }
            Operation::Json => serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                black_box(CLAIMS),
            )
            .is_ok_and(|claims| claims.len() == 5),
        }
    }
}

const KINDS: [&str; 5] = ["es256", "eddsa", "rs256", "sha256-1k", "json"];

/// Fixed keys (their `jwk` members) and their signatures over [`SIGNING_INPUT`], made once with
/// python3 + cryptography: no key generation in the process, whose cost varies from run to
/// run and would not cancel out under callgrind.
const ES256_X: &str = "Sq5WzwMOu97SjtilhpFMWaOKHC98dWAflWsp2xb3O-4";
const ES256_Y: &str = "3anUfvsbT8Ey4Ugyt8V7AjI8z5Mt3hnNxKtezOhiIzU";
const ES256_SIGNATURE: &str =
    "38v-MDRLmXHPTjuNR1dlHCPSJZw1MqyXsd1Tokkvff2RBJikQBbKO63qJWmS_sm2CTNObVywD6lMJpGqbdy2zA";
const ED25519_X: &str = "GTsCRktK3ga8_ACChPkGtRoAh3cWqMrJ7jY5XuBwF7M";
const ED25519_SIGNATURE: &str =
    "czbOfkGoJ0kOIlkjQ_2TYGc-I3PlIELequ1ruKdPFsPtxw-idnC-C_lEFzZZoIubjEXQJwbyUABnnQ2kOGIGAA";
const RSA_N: &str = "sV_7__t6KhLvh7fYF-LHKssh4BoWUBGLoKBAQn1ceGVAoXjJS_44lqzP3FjB0-sJ4g1ImenSn1h1cIwq_CXx1Hq4nyPwyOxeeIKLgY7VsKKnAsdLern8J3JvKSbOmZI0JmJ9T9WXlOMzWF1e6KMompu_PqmHiCdC4yrR1cfvx477m3Dbz_xHSwm07AenX7opTxQ6FORRTfXlYy9vkkaWM4_O2IHsT706DbBRFcILeMEpojHM6qwQqlX4T4Ywj3vAz3mGNZYsvM91gs9-0cSQVewCHDO_VR4vrSybjlTzLKwO42rmhMJs-0YlLPfY2shq4_29P8r1jDs9QRuNKjPnVQ";
const RSA_E: &str = "AQAB";
const RSA_SIGNATURE: &str = "kxjXCCy27I8if1Zqo_Y5IzHxrXoUu7SrY3Fs1HxsWvHpjlCTGtNjrEOUZnhYr75ON1LdDrEVYSU3MmjBVrBYCoq9jaA07S7qy0BSiQ7b8BtLqTZX765VSIQ-7sIULaNFjLjo1eo5cXWlZPxoNdyQ-IcX0I18jCaAHiMd9XzIvmtZS9Zoj4i17TdPOL2Y90jz58AE9kvsDO2PUmFEpgOghXQw-fAHdpIHJGjIbsIYSk8t8MFEgMTVnkH59wqRUbtT2VXJfW4YQ5KeGzfpI08fCp72pMpSRvM2I8g6ZAD0blwAbfJSueqNZH5RDSEYHLgarHPFTUJjOdcCtYCL8tO1lw";

fn decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// The operation of `kind`: a key parsed once from its `jwk` members, as
/// `auth::dpop::key::Material::parse` does, and its signature.
fn operation(kind: &str) -> Operation {
    let (key, signature) = match kind {
        "es256" => {
            let mut point = vec![0x04];
            point.extend(decode(ES256_X));
            point.extend(decode(ES256_Y));
            let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
            (key, ES256_SIGNATURE)
        }
        "eddsa" => (
            ParsedPublicKey::new(&ED25519, decode(ED25519_X)),
            ED25519_SIGNATURE,
        ),
        "rs256" => {
            let (n, e) = (decode(RSA_N), decode(RSA_E));
            let key = RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256);
            (key, RSA_SIGNATURE)
        }
        "sha256-1k" => return Operation::Sha256(vec![b'e'; 1024]),
        "json" => return Operation::Json,
        _ => panic!("unknown kind {kind}: one of {KINDS:?}"),
    };
    let key = key.expect("a public key aws-lc-rs parses");
    let operation = Operation::Verify(key, decode(signature));
    assert!(operation.run(), "the {kind} signature verifies");
    operation
}

/// How many runs of `operation` take about 20 ms: one timed batch.
fn batch(operation: &Operation) -> usize {
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed().as_millis() < 20 {
        black_box(operation.run());
        count += 1;
    }
    count
}

/// Nanoseconds per run of each operation: `rounds` rounds, each timing one batch of every
/// operation in turn (so that another process's load falls on all of them alike); the fastest
/// batch of each, the one least disturbed on a shared machine.
fn nanoseconds(operations: &[Operation], rounds: usize) -> Vec<f64> {
    let batches: Vec<usize> = operations.iter().map(batch).collect();
    let mut fastest = vec![f64::INFINITY; operations.len()];
    for _ in 0..rounds {
        for ((operation, count), fastest) in operations.iter().zip(&batches).zip(&mut fastest) {
            let start = Instant::now();
            for _ in 0..*count {
                assert!(operation.run());
            }
            *fastest = fastest.min(start.elapsed().as_nanos() as f64 / *count as f64);
        }
    }
    fastest
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["count", kind, count] => {
            let operation = operation(kind);
            let count: usize = count.parse().expect("N: a number");
            for _ in 0..count {
                assert!(operation.run());
            }
        }
        ["time", ref rest @ ..] => {
            let rounds = rest
                .first()
                .map_or(15, |r| r.parse().expect("ROUNDS: a number"));
            let operations: Vec<Operation> = KINDS.iter().map(|kind| operation(kind)).collect();
            let times = nanoseconds(&operations, rounds);
            let (sha, json) = (times[3], times[4]);
            println!("| operation | ns | ÷ SHA-256 of 1 KiB | ÷ JSON claims parse |");
            println!("|---|---:|---:|---:|");
            for (kind, ns) in KINDS.iter().zip(&times) {
                println!("| {kind} | {ns:.0} | {:.1} | {:.1} |", ns / sha, ns / json);
            }
        }
        _ => {
            eprintln!(
                "usage: signatures time [ROUNDS] | signatures count KIND N (KIND: {KINDS:?})"
            );
            std::process::exit(2);
        }
    }
}
