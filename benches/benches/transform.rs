//! Transform + validate: C# request bytes → parsed, mapped, Python v2 envelope validated against
//! the v2 schema (what `sdxl-transform request` does per message), and the schema compile.
//! `cargo xtask bench` runs this beside Python's `jsonschema` on the same Python requests.

use std::hint::black_box;

use benches::{read_case, TRANSFORM_CASES};
use criterion::{criterion_group, criterion_main, Criterion};
use transformer::request_map::{transform_request, MapOptions};
use transformer::Schema;

fn transform_and_validate(c: &mut Criterion) {
    let options = MapOptions::default();
    let mut group = c.benchmark_group("transform_validate");
    for case in TRANSFORM_CASES {
        let bytes = read_case(case).unwrap_or_else(|e| panic!("{e}"));
        // Warm the compiled validator outside the measurement, as a running worker would.
        assert!(
            transform_request(&bytes, &options).is_ok(),
            "{} must map",
            case.name
        );
        group.bench_function(case.name, |b| {
            b.iter(|| transform_request(black_box(&bytes), &options))
        });
    }
    group.finish();
}

fn validate_only(c: &mut Criterion) {
    let options = MapOptions::default();
    let mut group = c.benchmark_group("validate_v2");
    for case in TRANSFORM_CASES {
        let bytes = read_case(case).unwrap_or_else(|e| panic!("{e}"));
        let message = transform_request(&bytes, &options)
            .expect("fixture maps")
            .message_json();
        group.bench_function(case.name, |b| {
            b.iter(|| Schema::PythonRequest.is_valid(black_box(&message)))
        });
    }
    group.finish();
}

fn schema_compile(c: &mut Criterion) {
    let document = Schema::PythonRequest.document().clone();
    c.bench_function("schema_compile/python_request_v2", |b| {
        b.iter(|| jsonschema_compile(black_box(&document)))
    });
}

fn jsonschema_compile(document: &serde_json::Value) -> bool {
    transformer::schema::compile(document).is_ok()
}

criterion_group!(
    benches,
    transform_and_validate,
    validate_only,
    schema_compile
);
criterion_main!(benches);
