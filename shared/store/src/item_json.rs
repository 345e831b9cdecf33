//! DynamoDB items as JSON, losslessly: the same typed form DynamoDB's own JSON API and its
//! S3 export use (`{"S":"…"}`, `{"N":"…"}`, `{"B":"<base64>"}`, `SS`/`NS`/`BS`, `M`, `L`,
//! `BOOL`, `NULL`), so every attribute type — numbers as their exact decimal text, binary as
//! bytes — reads back as it was written. The backups are written in it.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// A raw item, as DynamoDB holds it.
pub type RawItem = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a DynamoDB JSON item: {0}")]
pub struct ItemJsonError(pub String);

fn bytes(blob: &Blob) -> Value {
    Value::String(STANDARD.encode(blob.as_ref()))
}

/// One attribute value in DynamoDB JSON. Map keys come out sorted, so the same item always
/// gives the same text (and the same checksum).
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": bytes(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::Ss(items) => json!({ "SS": items }),
        AttributeValue::Ns(items) => json!({ "NS": items }),
        AttributeValue::Bs(items) => json!({ "BS": items.iter().map(bytes).collect::<Vec<_>>() }),
        AttributeValue::L(items) => json!({ "L": items.iter().map(attribute_to_json).collect::<Vec<_>>() }),
        AttributeValue::M(map) => json!({ "M": item_to_json(map) }),
        // A type added to DynamoDB after this SDK: refusing to guess keeps the export honest.
        _ => json!({ "UNKNOWN": format!("{value:?}") }),
    }
}

/// An item in DynamoDB JSON, attributes in name order.
pub fn item_to_json(item: &RawItem) -> Value {
    let sorted: BTreeMap<&String, Value> = item.iter().map(|(k, v)| (k, attribute_to_json(v))).collect();
    Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect::<Map<_, _>>())
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, ItemJsonError> {
    value
        .as_array()
        .ok_or_else(|| ItemJsonError(format!("{what} is not a list")))?
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| ItemJsonError(format!("{what} holds a non-string")))
        })
        .collect()
}

fn blob(value: &Value) -> Result<Blob, ItemJsonError> {
    let text = value.as_str().ok_or_else(|| ItemJsonError("B is not a string".into()))?;
    STANDARD.decode(text).map(Blob::new).map_err(|e| ItemJsonError(format!("B is not base64: {e}")))
}

pub fn attribute_from_json(value: &Value) -> Result<AttributeValue, ItemJsonError> {
    let object = value
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| ItemJsonError(format!("an attribute is one {{\"TYPE\": value}} pair, got {value}")))?;
    let (kind, inner) = object.iter().next().ok_or_else(|| ItemJsonError("empty attribute".into()))?;
    let text = |v: &Value| {
        v.as_str().map(str::to_owned).ok_or_else(|| ItemJsonError(format!("{kind} is not a string")))
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(text(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "BOOL" => {
            AttributeValue::Bool(inner.as_bool().ok_or_else(|| ItemJsonError("BOOL is not a bool".into()))?)
        }
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(strings(inner, "SS")?),
        "NS" => AttributeValue::Ns(strings(inner, "NS")?),
        "BS" => AttributeValue::Bs(
            inner
                .as_array()
                .ok_or_else(|| ItemJsonError("BS is not a list".into()))?
                .iter()
                .map(blob)
                .collect::<Result<_, _>>()?,
        ),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(|| ItemJsonError("L is not a list".into()))?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        other => return Err(ItemJsonError(format!("unknown attribute type {other}"))),
    })
}

pub fn item_from_json(value: &Value) -> Result<RawItem, ItemJsonError> {
    value
        .as_object()
        .ok_or_else(|| ItemJsonError("an item is an object".into()))?
        .iter()
        .map(|(name, v)| Ok((name.clone(), attribute_from_json(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = AttributeValue> {
        prop_oneof![
            ".{0,12}".prop_map(AttributeValue::S),
            "-?[0-9]{1,20}(\\.[0-9]{1,10})?".prop_map(AttributeValue::N),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| AttributeValue::B(Blob::new(b))),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null(true)),
            proptest::collection::vec(".{1,6}", 1..4).prop_map(AttributeValue::Ss),
            proptest::collection::vec("[0-9]{1,8}", 1..4).prop_map(AttributeValue::Ns),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..6).prop_map(Blob::new), 1..3)
                .prop_map(AttributeValue::Bs),
        ]
    }

    fn attribute() -> impl Strategy<Value = AttributeValue> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::hash_map("[a-z#]{1,6}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_item_reads_back_as_written(item in proptest::collection::hash_map("[A-Za-z_#]{1,8}", attribute(), 0..8)) {
            let json = item_to_json(&item);
            let text = serde_json::to_string(&json).expect("text");
            let back = item_from_json(&serde_json::from_str(&text).expect("json")).expect("item");
            prop_assert_eq!(back, item);
        }
    }

    #[test]
    fn numbers_keep_their_exact_text_and_garbage_is_refused() {
        let item = RawItem::from([("n".to_owned(), AttributeValue::N("12345678901234567890.000001".into()))]);
        assert_eq!(item_to_json(&item), json!({ "n": { "N": "12345678901234567890.000001" } }));
        assert!(item_from_json(&json!({ "a": { "X": 1 } })).is_err());
        assert!(item_from_json(&json!({ "a": { "S": "x", "N": "1" } })).is_err());
        assert!(item_from_json(&json!({ "a": { "B": "***" } })).is_err());
    }
}
