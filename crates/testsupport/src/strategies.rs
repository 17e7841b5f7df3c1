//! proptest strategies shared by the property tests of several crates.

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, a few levels deep, with strings and object keys drawn
/// from `text`.
pub fn any_json<S>(text: S) -> impl Strategy<Value = Value>
where
    S: Strategy<Value = String> + Clone + 'static,
{
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(text.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
