//! Transform + validate: C# request bytes → parsed, mapped, Python v2 message validated against
//! the v2 schema (the message kept typed, as `transform_request` returns it), and the same with
//! the message's JSON text written (what `sdxl-transform request` does per message); the v2
//! validation alone, on the message's `Value` and on its flat document; and the schema compile.
//! `cargo xtask bench` runs this beside Python's `jsonschema` on the same Python requests.

use std::hint::black_box;

use benches::{read_case, TRANSFORM_CASES};
use criterion::{criterion_group, criterion_main, Criterion};
use transformer::flat::Flat;
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

fn transform_validate_write(c: &mut Criterion) {
    let options = MapOptions::default();
    let mut group = c.benchmark_group("transform_validate_write");
    for case in TRANSFORM_CASES {
        let bytes = read_case(case).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::with_capacity(4096);
        group.bench_function(case.name, |b| {
            b.iter(|| {
                out.clear();
                let mapping = transform_request(black_box(&bytes), &options).expect("maps");
                mapping.write_json(&mut out, false).expect("writes");
                black_box(out.len())
            })
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
        let flat = Flat::from_serialize(&message, 96).expect("a Value is a document");
        group.bench_function(format!("{}/flat", case.name), |b| {
            b.iter(|| Schema::PythonRequest.is_valid_flat(black_box(&flat)))
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
    transform_validate_write,
    validate_only,
    schema_compile
);
criterion_main!(benches);
