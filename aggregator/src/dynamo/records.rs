//! Stream records to events. One decoder for both ways records arrive: the
//! DynamoDB JSON event Lambda delivers, and the DynamoDB Streams API (whose
//! records [`from_streams_api`] reshapes into the same JSON).

use crate::dynamo::plan::StreamEvent;
use aws_lambda_events::event::dynamodb::EventRecord;
use serde_json::{json, Value};
use sygno_shared::store::dynamo::state::{EventItem, Partition};

/// One stream record, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A new event in the log.
    Event(StreamEvent),
    /// Not an event insert (the aggregator's own writes, a change that is
    /// not an insert): nothing to do.
    Ignored,
    /// A record that can never be decoded. `sequence` identifies it for
    /// a partial batch failure report, when it could be read at all.
    Poison {
        sequence: Option<String>,
        reason: String,
    },
}

/// Decodes one record of a Lambda DynamoDB event.
pub fn decode(record: &Value) -> Record {
    let sequence = record
        .pointer("/dynamodb/SequenceNumber")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let poison = |reason: String| Record::Poison {
        sequence: sequence.clone(),
        reason,
    };
    // Reasons never quote the record: serde's messages can carry values
    // from it, and logs must not carry payloads.
    let parsed: EventRecord = match serde_json::from_value(record.clone()) {
        Ok(parsed) => parsed,
        Err(_) => return poison("not a DynamoDB stream record".into()),
    };
    if parsed.event_name != "INSERT" {
        return Record::Ignored;
    }
    let pk = parsed
        .change
        .keys
        .get("pk")
        .or_else(|| parsed.change.new_image.get("pk"));
    match pk {
        Some(serde_dynamo::AttributeValue::S(pk)) => match Partition::of(pk) {
            Partition::Log => {}
            Partition::Aggregates | Partition::Sources => return Record::Ignored,
            Partition::Foreign => return poison("an item Sygno does not write".into()),
        },
        Some(_) => return poison("the record's key is not a string".into()),
        None => return poison("the record has no key".into()),
    }
    let Some(sequence) = parsed.change.sequence_number.clone() else {
        return poison("the record has no sequence number".into());
    };
    match serde_dynamo::from_item::<_, EventItem>(parsed.change.new_image) {
        Ok(item) => match item.defect() {
            None => Record::Event(StreamEvent { sequence, item }),
            Some(why) => poison(why.into()),
        },
        Err(_) => poison(
            "the new image is not an event item (an attribute is missing or mistyped)".into(),
        ),
    }
}

/// A DynamoDB Streams API record in the shape Lambda delivers it.
pub fn from_streams_api(
    record: &aws_sdk_dynamodbstreams::types::Record,
    stream_arn: &str,
) -> Value {
    let image = |map: Option<&std::collections::HashMap<String, _>>| {
        map.map(
            |m: &std::collections::HashMap<
                String,
                aws_sdk_dynamodbstreams::types::AttributeValue,
            >| {
                serde_json::to_value(serde_dynamo::Item::from(m.clone())).unwrap_or(Value::Null)
            },
        )
    };
    let change = record.dynamodb();
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": change
            .and_then(|c| c.approximate_creation_date_time())
            .map(|t| t.as_secs_f64())
            .unwrap_or_default(),
        "Keys": image(change.and_then(|c| c.keys.as_ref())).unwrap_or(json!({})),
        "SequenceNumber": change.and_then(|c| c.sequence_number()),
        "SizeBytes": change.and_then(|c| c.size_bytes()).unwrap_or_default(),
        "StreamViewType": change
            .and_then(|c| c.stream_view_type())
            .map(|t| t.as_str()),
    });
    if let Some(new_image) = image(change.and_then(|c| c.new_image.as_ref())) {
        dynamodb["NewImage"] = new_image;
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventVersion": record.event_version(),
        "eventSource": record.event_source(),
        "awsRegion": record.aws_region(),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    })
}

/// Logs and counts a poison record (its sequence number, never its payload).
pub fn report_poison(sequence: Option<&str>, reason: &str) {
    metrics::counter!(sygno_shared::telemetry::metric::POISON_RECORDS).increment(1);
    tracing::warn!(
        sequence = sequence.unwrap_or("?"),
        %reason,
        "undecodable stream record skipped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lambda_record(new_image: Value, sequence: &str) -> Value {
        json!({
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_700_000_000.0,
                "Keys": {"pk": new_image["pk"].clone(), "sk": new_image["sk"].clone()},
                "NewImage": new_image,
                "SequenceNumber": sequence,
                "SizeBytes": 26,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026"
        })
    }

    fn event_image() -> Value {
        json!({
            "pk": {"S": "log#03"}, "sk": {"S": "ev#e1"}, "kind": {"S": "event"},
            "event_id": {"S": "e1"}, "event_time": {"N": "1700000000000"},
            "received_at": {"N": "1700000000100"}, "name": {"S": "n"},
            "user_id": {"S": "u"}, "data": {"S": "{\"x\":1}"}
        })
    }

    #[test]
    fn an_event_insert_decodes() {
        let Record::Event(event) = decode(&lambda_record(event_image(), "111")) else {
            panic!("not an event")
        };
        assert_eq!(event.sequence, "111");
        assert_eq!(event.item.pk, "log#03");
        assert_eq!(event.item.event_time, 1_700_000_000_000);
        assert_eq!(event.item.data, r#"{"x":1}"#);
    }

    #[test]
    fn own_writes_and_other_events_are_ignored() {
        let rows = json!({"pk": {"S": "rows"}, "sk": {"S": "rows"}});
        assert_eq!(decode(&lambda_record(rows, "1")), Record::Ignored);
        // The write path's source items and their count.
        for sk in ["n#gh-1", "count"] {
            let source = json!({"pk": {"S": "src"}, "sk": {"S": sk}});
            assert_eq!(decode(&lambda_record(source, "1")), Record::Ignored);
        }
        let mut removed = lambda_record(event_image(), "1");
        removed["eventName"] = json!("REMOVE");
        assert_eq!(decode(&removed), Record::Ignored);
    }

    #[test]
    fn undecodable_records_are_poison_with_their_sequence() {
        let mut image = event_image();
        image["event_time"] = json!({"S": "yesterday"});
        image["data"] = json!({"N": "12345"});
        match decode(&lambda_record(image, "42")) {
            Record::Poison { sequence, reason } => {
                assert_eq!(sequence.as_deref(), Some("42"));
                assert!(
                    !reason.contains("yesterday") && !reason.contains("12345"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        match decode(&json!({"dynamodb": {"SequenceNumber": "43"}, "eventName": 7})) {
            Record::Poison { sequence, .. } => assert_eq!(sequence.as_deref(), Some("43")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&json!("garbage")),
            Record::Poison { sequence: None, .. }
        ));
    }
}
