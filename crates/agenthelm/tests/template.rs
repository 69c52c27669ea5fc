//! The `{{ ... }}` template parser: its parsed form, resolution, and properties over any text.

use agenthelm::plan::{references_in, resolve_templates, Reference, Segment, Template};
use proptest::prelude::*;
use serde_json::{json, Value};

fn raw_text(template: &Template) -> String {
    template
        .segments()
        .iter()
        .map(|segment| match segment {
            Segment::Text(text) => *text,
            Segment::Placeholder { raw, .. } => *raw,
        })
        .collect()
}

#[test]
fn text_and_placeholders_are_cut_apart() {
    let template = Template::parse("a {{steps.x.result}} b {{ nonsense }} c {{result.id");
    assert_eq!(
        template.segments(),
        [
            Segment::Text("a "),
            Segment::Placeholder {
                raw: "{{steps.x.result}}",
                reference: Some(Reference::Step {
                    id: "x",
                    path: vec![]
                }),
            },
            Segment::Text(" b "),
            Segment::Placeholder {
                raw: "{{ nonsense }}",
                reference: None,
            },
            Segment::Text(" c {{result.id"),
        ]
    );
    assert_eq!(template.single_reference(), None);
}

#[test]
fn references_name_steps_paths_and_the_own_result() {
    let parse = |text| Template::parse(text).single_reference().cloned();
    assert_eq!(
        parse("{{ steps.fetch.result.items.0 }}"),
        Some(Reference::Step {
            id: "fetch",
            path: vec!["items", "0"]
        })
    );
    // An id may contain `.result` when something other than a path follows it.
    assert_eq!(
        parse("{{steps.a.results.result}}"),
        Some(Reference::Step {
            id: "a.results",
            path: vec![]
        })
    );
    assert_eq!(
        parse("{{result.id}}"),
        Some(Reference::OwnResult { path: vec!["id"] })
    );
    for not_a_reference in [
        "{{steps.a}}",
        "{{steps..result}}",
        "{{resultx}}",
        "{{}}",
        "{{ name }}",
    ] {
        assert_eq!(parse(not_a_reference), None, "{not_a_reference}");
    }
    let own = Reference::OwnResult { path: vec![] };
    assert_eq!(own.step_id(), None);
    assert_eq!(own.to_string(), "{{result}}");
}

#[test]
fn references_are_found_at_any_depth() {
    let args = json!({"x": {"deep": ["{{steps.a.result}} and {{steps.b.result.k}}"]}, "n": 3});
    let ids: Vec<&str> = references_in(&args)
        .iter()
        .filter_map(Reference::step_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(references_in(&json!({"plain": "text {{ not one }}"})).is_empty());
}

#[test]
fn resolution_keeps_types_paths_and_unresolved_text() {
    let results = json!({"made": "{\"id\": 9, \"tags\": [\"x\"]}", "n": 4});
    let lookup = |id: &str| results.get(id);
    let args = json!({
        "id": "{{steps.made.result.id}}",
        "tag": "tag={{steps.made.result.tags.0}}",
        "n": "{{steps.n.result}}",
        "missing": "{{steps.ghost.result}}",
        "mixed": "{{steps.n.result}}/{{steps.ghost.result}}/{{junk}}",
        "own": "{{result}}",
    });
    assert_eq!(
        resolve_templates(&args, &lookup, Some(&json!("mine"))),
        json!({
            "id": 9,
            "tag": "tag=x",
            "n": 4,
            "missing": "{{steps.ghost.result}}",
            "mixed": "4/{{steps.ghost.result}}/{{junk}}",
            "own": "mine",
        })
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Strings made mostly of the characters that matter to the parser.
fn brace_heavy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "{{", "}}", "{", "}", " ", ".", "steps", "steps.", ".result", "result", "a", "0", "é",
        ]),
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn parsing_any_text_never_panics_and_loses_nothing(text in prop_oneof![any::<String>(), brace_heavy()]) {
        let template = Template::parse(&text);
        prop_assert_eq!(raw_text(&template), text.clone());
        let lookup = |_: &str| None;
        let resolved = resolve_templates(&Value::String(text.clone()), &lookup, None);
        // With nothing to fill in, every placeholder stays as it was written.
        prop_assert_eq!(resolved, Value::String(text));
    }

    #[test]
    fn values_without_braces_resolve_to_themselves(value in json_value()) {
        prop_assume!(!value.to_string().contains("{{"));
        let results = json!({"a": 1});
        let lookup = |id: &str| results.get(id);
        prop_assert_eq!(resolve_templates(&value, &lookup, Some(&json!(2))), value.clone());
        prop_assert!(references_in(&value).is_empty());
    }

    #[test]
    fn written_references_parse_back(
        id in "[a-z_][a-z0-9_]{0,8}",
        path in prop::collection::vec("[a-z0-9_]{1,5}", 0..3),
        own in any::<bool>(),
    ) {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let reference = if own {
            Reference::OwnResult { path }
        } else {
            Reference::Step { id: &id, path }
        };
        let written = reference.to_string();
        let parsed = Template::parse(&written);
        prop_assert_eq!(parsed.single_reference(), Some(&reference));
    }
}
