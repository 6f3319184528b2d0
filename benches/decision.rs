//! The pure core of a request's decision (issue 5 part 3): `fhir::path::normalize_path`,
//! `fhir::classify` and `authz::authorize` over a table of typical requests, and
//! `fhir::bundle::classify_bundle` + `authz::authorize_bundle` over batch and transaction
//! bodies (the only requests whose body is read). No I/O.
//!
//! - `table`: the whole table of requests per iteration (throughput is per request).
//! - `bundle/transaction-10`, `bundle/batch-100`: bodies with a small Patient resource per
//!   entry, mixed methods; the body is parsed from bytes each time, as the proxy does.
//!
//! Run: `cargo bench --bench decision` (quick: append
//! `-- --warm-up-time 1 --measurement-time 3`).
//!
//! Last results (2026-12-01; Intel Xeon, 2 vCPUs, otherwise idle; release profile; criterion
//! medians of a quick run, so read ±10 %):
//!
//! | bench | time | per request / entry |
//! |---|---|---|
//! | table (16 requests) | 11.9 µs | 0.74 µs |
//! | table/normalize_path | 1.75 µs | 0.11 µs |
//! | table/classify | 2.74 µs | 0.17 µs |
//! | table/authorize | 5.96 µs | 0.37 µs |
//! | bundle/transaction-10 | 12.4 µs | 1.2 µs |
//! | bundle/batch-100 | 123 µs | 1.2 µs |
//!
//! `authorize` is the largest part: it formats the decision's `reason` for every request, as
//! `fhirguard explain` and bundle entries need. Serving calls `authz::decide` with
//! `Reasons::OnDenial`, which writes the reason only for a refusal (`proxy::decision`).
//! (2026-11-22, AMD EPYC: table 17.6 µs, transaction-10 18.6 µs, batch-100 173 µs.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fhirguard::actions::DataActions;
use fhirguard::authz::{authorize, authorize_bundle};
use fhirguard::fhir::bundle::classify_bundle;
use fhirguard::fhir::classify;
use fhirguard::fhir::path::normalize_path;
use http::{HeaderMap, Method};
use serde_json::json;

/// Method, raw path and query, as a client would send them.
const REQUESTS: [(&str, &str, Option<&str>); 16] = [
    ("GET", "/Patient/123", None),
    ("GET", "/Patient", Some("name=smith&_count=50")),
    ("GET", "/Observation", Some("subject=Patient/1")),
    ("GET", "/Patient/123/Observation", Some("code=8867-4")),
    ("GET", "/Patient/123/_history/2", None),
    ("GET", "/Patient/123/$everything", None),
    ("GET", "/metadata", None),
    ("GET", "/", Some("_type=Patient,Observation")),
    ("HEAD", "/Encounter/e-1", None),
    ("POST", "/Patient", None),
    ("POST", "/Patient/_search", None),
    ("PUT", "/Patient/123", None),
    ("PUT", "/Patient", Some("identifier=x|1")),
    ("PATCH", "/Patient/123", None),
    ("DELETE", "/Patient/123", Some("_hardDelete=true")),
    ("POST", "/$export", None),
];

fn table(c: &mut Criterion) {
    let requests: Vec<(Method, &str, Option<&str>)> = REQUESTS
        .iter()
        .map(|(method, path, query)| (method.parse().expect("method"), *path, *query))
        .collect();
    let headers = HeaderMap::new();
    let granted = DataActions::ALL;
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.bench_function("table", |b| {
        b.iter(|| {
            for (method, raw_path, query) in &requests {
                let path = normalize_path(black_box(raw_path)).expect("path");
                let request = classify(method, &path, *query, &headers).expect("classified");
                black_box(authorize(&request, granted));
            }
        });
    });
    // The three steps apart, to see where a request's decision time goes.
    group.bench_function("table/normalize_path", |b| {
        b.iter(|| {
            for (_, raw_path, _) in &requests {
                black_box(normalize_path(black_box(raw_path)).expect("path"));
            }
        });
    });
    let paths: Vec<String> = requests
        .iter()
        .map(|(_, raw_path, _)| normalize_path(raw_path).expect("path"))
        .collect();
    group.bench_function("table/classify", |b| {
        b.iter(|| {
            for ((method, _, query), path) in requests.iter().zip(&paths) {
                black_box(classify(method, black_box(path), *query, &headers).expect("classified"));
            }
        });
    });
    let classified: Vec<_> = requests
        .iter()
        .zip(&paths)
        .map(|((method, _, query), path)| classify(method, path, *query, &headers).expect("ok"))
        .collect();
    group.bench_function("table/authorize", |b| {
        b.iter(|| {
            for request in &classified {
                black_box(authorize(black_box(request), granted));
            }
        });
    });
    group.finish();
}

/// A bundle of `size` entries cycling through reads, searches, creates, updates and deletes.
fn bundle_body(kind: &str, size: usize) -> Vec<u8> {
    let shapes = [
        json!({"method": "GET", "url": "Patient/1"}),
        json!({"method": "GET", "url": "Observation?subject=Patient/1"}),
        json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x"}),
        json!({"method": "PUT", "url": "Patient/2"}),
        json!({"method": "DELETE", "url": "Patient/3"}),
    ];
    let entries: Vec<_> = (0..size)
        .map(|i| {
            json!({
                "fullUrl": format!("urn:uuid:00000000-0000-0000-0000-{i:012}"),
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Smith", "given": ["Alice"]}],
                    "birthDate": "1970-01-01"
                },
                "request": shapes[i % shapes.len()],
            })
        })
        .collect();
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": kind, "entry": entries}))
        .expect("json")
}

fn bundles(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/bundle");
    for (kind, size) in [("transaction", 10), ("batch", 100)] {
        let body = bundle_body(kind, size);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kind}-{size}")),
            &body,
            |b, body| {
                b.iter(|| {
                    let bundle = classify_bundle(black_box(body)).expect("bundle");
                    black_box(authorize_bundle(&bundle, DataActions::ALL))
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, table, bundles);
criterion_main!(benches);
