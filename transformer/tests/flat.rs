//! [`Flat`] as a `jsonschema` representation: the crate's own contract test, and the cases where
//! a representation is most easily wrong (number kinds, non-finite floats, `const`/`enum`).

use jsonschema::json::{conformance, Node};
use serde_json::{json, Value};
use transformer::flat::{Flat, FlatJson};

fn flat(value: &Value) -> Flat {
    Flat::from_serialize(value, 4).unwrap()
}

#[test]
fn meets_jsonschemas_representation_contract() {
    let document = flat(&conformance::document());
    conformance::assert_conformance::<FlatJson>(&document.root());
}

#[test]
fn holds_the_document_serde_json_would_build() {
    #[derive(serde::Serialize)]
    struct Sample {
        int: i64,
        neg: i32,
        float: f64,
        whole: f64,
        nan: f64,
        inf: f32,
        none: Option<u8>,
        bytes: Vec<u8>,
        unit: (),
        nested: Vec<std::collections::BTreeMap<String, Vec<bool>>>,
    }
    let sample = Sample {
        int: 5,
        neg: -3,
        float: 0.1,
        whole: 7.0,
        nan: f64::NAN,
        inf: f32::INFINITY,
        none: None,
        bytes: vec![1, 2],
        unit: (),
        nested: vec![[("k".to_string(), vec![true, false])].into()],
    };
    let value = serde_json::to_value(&sample).unwrap();
    let document = Flat::from_serialize(&sample, 1).unwrap();
    assert_eq!(document.to_value(), value);
    assert_eq!(
        serde_json::to_string(&document.to_value()).unwrap(),
        serde_json::to_string(&sample).unwrap()
    );
}

#[test]
fn validates_as_the_value_does() {
    let schema = json!({
        "type": "object",
        "properties": {
            "i": {"type": "integer", "minimum": 0},
            "e": {"enum": ["a", 1, null, true, {"k": [1]}]},
            "c": {"const": 2.0},
            "s": {"type": "string", "maxLength": 2},
            "u": {"type": "array", "uniqueItems": true}
        },
        "additionalProperties": false,
        "required": ["i"]
    });
    let on_value = jsonschema::draft202012::new(&schema).unwrap();
    let on_flat = jsonschema::options_for::<FlatJson>()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap();
    let cases = [
        json!({"i": 1}),
        json!({"i": 1.0}),
        json!({"i": 1.5}),
        json!({"i": -1}),
        json!({}),
        json!({"i": 0, "x": 1}),
        json!({"i": 0, "e": "a"}),
        json!({"i": 0, "e": 1.0}),
        json!({"i": 0, "e": {"k": [1]}}),
        json!({"i": 0, "e": {"k": [2]}}),
        json!({"i": 0, "e": false}),
        json!({"i": 0, "c": 2}),
        json!({"i": 0, "c": 2.5}),
        json!({"i": 0, "s": "ab"}),
        json!({"i": 0, "s": "abc"}),
        json!({"i": 0, "s": "éé"}),
        json!({"i": 0, "u": [1, 1.0]}),
        json!({"i": 0, "u": [1, 2, {"a": 1}, {"a": 2}]}),
        json!([1]),
        json!("text"),
    ];
    for case in cases {
        let document = flat(&case);
        assert_eq!(
            on_flat.is_valid(document.root()),
            on_value.is_valid(&case),
            "{case}"
        );
        assert_eq!(
            on_flat.validate(document.root()).is_ok(),
            on_value.validate(&case).is_ok(),
            "{case}"
        );
        assert_eq!(document.root().to_value().into_owned(), case);
    }
}
