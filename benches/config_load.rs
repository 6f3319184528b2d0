//! Configuration loading (issue 5 part 3): `Config::parse` of `config/entra-smart.yaml` (Entra
//! ID primary authority plus two smart identity providers, with comments) — what start-up,
//! `fhirguard check` and every reload run. It is off the request path: a reload builds a new
//! generation and swaps it in; requests only load the current one.
//!
//! Run: `cargo bench --bench config_load` (quick: append
//! `-- --warm-up-time 1 --measurement-time 3`).
//!
//! Last results (2026-11-22; AMD EPYC, 2 vCPUs shared with other builds, load average ~3.5;
//! release profile; criterion median of a quick run, so read ±10 %): `parse/entra-smart.yaml`
//! 48.1 µs — about two cold RS256 token verifications (`token_verification.rs`), once per reload.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fhirguard::config::Config;

const ENTRA_SMART: &str = include_str!("../config/entra-smart.yaml");

fn parse(c: &mut Criterion) {
    c.bench_function("config_load/parse/entra-smart.yaml", |b| {
        b.iter(|| Config::parse(black_box(ENTRA_SMART)).expect("valid example"));
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
