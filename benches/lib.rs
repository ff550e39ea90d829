//! Inputs shared by the criterion benches and `cargo xtask bench`: the requests every bench
//! transforms, read from the committed fixtures.

use std::path::PathBuf;

/// A bench input: a name (used as the criterion benchmark id) and a fixture path.
pub struct Case {
    pub name: &'static str,
    pub fixture: &'static str,
}

/// The requests the transform bench measures: the upstream HTTP sample and the seed's example.
pub const TRANSFORM_CASES: &[Case] = &[
    Case {
        name: "upstream_http_test_api",
        fixture: "fixtures/requests/upstream/enhancedsdxl_http_request.test_api.e4789f8.json",
    },
    Case {
        name: "seed_example",
        fixture: "fixtures/requests/seed/seed_example.json",
    },
];

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The fixture's bytes (benches and xtask run from a checkout: a missing fixture is a broken
/// checkout, reported with its path).
pub fn read_case(case: &Case) -> Result<Vec<u8>, String> {
    let path = project_root().join(case.fixture);
    std::fs::read(&path).map_err(|e| format!("cannot read bench fixture {}: {e}", path.display()))
}
