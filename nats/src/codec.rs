//! Encoding of domain events into stored commits and back, including the
//! sealing of personal data and the upcasting of old schema versions.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message as _;
use serde_json::{Map, Value};
use trackhrs_domain::personal::{SEALED_KEY, SUBJECT_KEY, VALUE_KEY};
use trackhrs_domain::{Aggregate, DomainEvent};
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

use crate::error::StoreError;
use crate::keys::{DataKey, KeyStore};

/// JSON key of the key id stored beside a sealed value.
const KEY_ID_KEY: &str = "k";

/// One stored event, decoded generically (without knowing its aggregate's
/// Rust type): what `trackhrs events tail` and audits print.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordedEvent {
    /// Event type name.
    pub event_type: String,
    /// Schema version as stored.
    pub schema_version: u32,
    /// Aggregate version after this event.
    pub aggregate_version: u64,
    /// Payload as stored, personal data opened (or shown erased).
    pub payload: Value,
}

/// One stored commit with its place in the log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecodedCommit {
    /// Global stream sequence: a reader's checkpoint.
    pub stream_sequence: u64,
    /// Subject (`evt.<org>.<type>.<id>`).
    pub subject: String,
    /// Command id (the message's `Nats-Msg-Id`).
    pub command_id: String,
    /// Organization.
    pub org_id: String,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Who issued the command.
    pub actor: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Causation id.
    pub causation_id: String,
    /// Recorded at, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The events.
    pub events: Vec<RecordedEvent>,
}

/// Splits a domain event into (type, schema version, payload JSON).
pub(crate) fn split_event<E: DomainEvent>(event: &E) -> Result<(String, u32, Value), StoreError> {
    let value = serde_json::to_value(event).map_err(|e| StoreError::Encode(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(StoreError::Encode(format!(
            "{} must serialize as an adjacently tagged object",
            event.event_type()
        )));
    };
    match fields.remove("type") {
        Some(Value::String(t)) if t == event.event_type() => {}
        _ => {
            return Err(StoreError::Encode(format!(
                "{}: serde tag \"type\" must equal event_type()",
                event.event_type()
            )));
        }
    }
    let payload = fields.remove("data").unwrap_or(Value::Null);
    Ok((
        event.event_type().to_owned(),
        event.schema_version(),
        payload,
    ))
}

/// Rebuilds a domain event from its type and a payload already upcast to the
/// current schema, with personal data opened.
pub(crate) fn join_event<A: Aggregate>(
    event_type: &str,
    payload: Value,
) -> Result<A::Event, String> {
    let mut tagged = Map::new();
    tagged.insert("type".into(), Value::String(event_type.to_owned()));
    if !payload.is_null() {
        tagged.insert("data".into(), payload);
    }
    serde_json::from_value(Value::Object(tagged)).map_err(|e| format!("{event_type}: {e}"))
}

fn personal_object(map: &Map<String, Value>) -> Option<&str> {
    match map.get(SUBJECT_KEY) {
        Some(Value::String(s)) if map.contains_key(VALUE_KEY) || map.contains_key(SEALED_KEY) => {
            Some(s)
        }
        _ => None,
    }
}

/// Collects the data subjects of every personal-data object in `value` that
/// holds a value (clear or sealed); erased values need no key.
pub(crate) fn personal_subjects(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(s) = personal_object(map) {
                let holds_value = matches!(map.get(VALUE_KEY), Some(Value::String(_)))
                    || matches!(map.get(SEALED_KEY), Some(Value::String(_)));
                if holds_value {
                    out.insert(s.to_owned());
                }
            } else {
                map.values().for_each(|v| personal_subjects(v, out));
            }
        }
        Value::Array(items) => items.iter().for_each(|v| personal_subjects(v, out)),
        _ => {}
    }
}

/// Replaces every clear personal value with its sealed form.
pub(crate) fn seal(
    value: &mut Value,
    keys: &HashMap<String, Arc<DataKey>>,
) -> Result<(), StoreError> {
    match value {
        Value::Object(map) => {
            if let Some(subject) = personal_object(map).map(str::to_owned) {
                if let Some(Value::String(clear)) = map.remove(VALUE_KEY) {
                    let key = keys.get(&subject).ok_or_else(|| {
                        StoreError::Keys(format!("no data key for {subject} while sealing"))
                    })?;
                    map.insert(KEY_ID_KEY.into(), Value::String(key.id.clone()));
                    map.insert(
                        SEALED_KEY.into(),
                        Value::String(key.seal(&subject, &clear)?),
                    );
                }
                return Ok(());
            }
            map.values_mut().try_for_each(|v| seal(v, keys))
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| seal(v, keys)),
        _ => Ok(()),
    }
}

/// Opens one sealed value of `subject`: the clear value, or `None` when the
/// subject's key is gone (erased) or was replaced. A value whose key exists
/// but which does not authenticate has been tampered with: an error.
fn open_sealed(
    key: Option<&DataKey>,
    subject: &str,
    key_id: Option<&str>,
    sealed: &str,
) -> Result<Option<String>, String> {
    match (key, key_id) {
        (Some(key), Some(id)) if key.id == id => key
            .open(subject, sealed)
            .map(Some)
            .ok_or_else(|| format!("personal data of {subject} fails authentication")),
        _ => Ok(None),
    }
}

/// A personal-data object as stored, read straight from a payload's JSON
/// (no `serde_json::Value` tree): what a reader of a hot event type
/// deserializes its personal fields into before opening them with
/// [`StoredPersonal::open`].
#[derive(Debug, serde::Deserialize)]
pub struct StoredPersonal<'a> {
    /// The data subject.
    #[serde(rename = "$pd", borrow)]
    pub subject: std::borrow::Cow<'a, str>,
    /// Id of the key that sealed the value (hex, never escaped).
    #[serde(rename = "k", default)]
    key_id: Option<&'a str>,
    /// The sealed value (base64, never escaped); absent once erased at write.
    #[serde(rename = "ct", default)]
    sealed: Option<&'a str>,
}

impl StoredPersonal<'_> {
    /// The clear value, opened with `key` (the subject's key as
    /// [`KeyStore::key_for_read`] gives it); `None` when the subject was
    /// erased. Err when the value does not authenticate under its key.
    pub fn open(&self, key: Option<&DataKey>) -> Result<Option<String>, String> {
        match self.sealed {
            Some(sealed) => open_sealed(key, &self.subject, self.key_id, sealed),
            None => Ok(None),
        }
    }
}

/// Replaces every sealed personal value with its clear value, or with an
/// erased marker when the subject's key is gone. A value whose key exists
/// but which does not authenticate has been tampered with: an error.
pub(crate) fn unseal(
    value: &mut Value,
    keys: &HashMap<String, Option<Arc<DataKey>>>,
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if let Some(subject) = personal_object(map).map(str::to_owned) {
                let key_id = map.remove(KEY_ID_KEY);
                if let Some(Value::String(sealed)) = map.remove(SEALED_KEY) {
                    let key = keys.get(&subject).cloned().flatten();
                    let key_id = match &key_id {
                        Some(Value::String(id)) => Some(id.as_str()),
                        _ => None,
                    };
                    let clear = open_sealed(key.as_deref(), &subject, key_id, &sealed)?;
                    map.insert(VALUE_KEY.into(), clear.map_or(Value::Null, Value::String));
                }
                return Ok(());
            }
            map.values_mut().try_for_each(|v| unseal(v, keys))
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| unseal(v, keys)),
        _ => Ok(()),
    }
}

/// Seals every personal value in `values` with the subjects' keys (created on first use).
pub(crate) async fn seal_all(keys: &KeyStore, values: &mut [Value]) -> Result<(), StoreError> {
    let mut subjects = BTreeSet::new();
    values
        .iter()
        .for_each(|v| personal_subjects(v, &mut subjects));
    let mut found = HashMap::with_capacity(subjects.len());
    for s in subjects {
        let key = keys.key_for_write(&s).await?;
        found.insert(s, key);
    }
    values.iter_mut().try_for_each(|v| seal(v, &found))
}

/// Looks up the keys of every subject with personal data in `values`.
pub(crate) async fn keys_for(
    keys: &KeyStore,
    values: &[&Value],
) -> Result<HashMap<String, Option<Arc<DataKey>>>, StoreError> {
    let mut subjects = BTreeSet::new();
    values
        .iter()
        .for_each(|v| personal_subjects(v, &mut subjects));
    let mut found = HashMap::with_capacity(subjects.len());
    for s in subjects {
        let key = keys.key_for_read(&s).await?;
        found.insert(s, key);
    }
    Ok(found)
}

/// Decodes the protobuf commit of a stored message (payloads left as
/// stored: JSON with personal data sealed).
pub fn decode_commit(subject: &str, sequence: u64, bytes: &[u8]) -> Result<Commit, StoreError> {
    let decode_err = |reason: String| StoreError::Decode {
        subject: subject.to_owned(),
        sequence,
        reason,
    };
    let commit = Commit::decode(bytes).map_err(|e| decode_err(format!("not a commit: {e}")))?;
    if commit.events.is_empty() {
        return Err(decode_err("commit without events".into()));
    }
    if commit.command_id.is_empty() {
        return Err(decode_err("commit without command id".into()));
    }
    Ok(commit)
}

/// Parses an envelope's JSON payload.
pub(crate) fn payload_json(
    subject: &str,
    sequence: u64,
    envelope: &EventEnvelope,
) -> Result<Value, StoreError> {
    serde_json::from_slice(&envelope.payload).map_err(|e| StoreError::Decode {
        subject: subject.to_owned(),
        sequence,
        reason: format!(
            "{} v{} payload is not JSON: {e}",
            envelope.event_type, envelope.schema_version
        ),
    })
}

/// Decodes a stored message generically, opening personal data.
pub async fn decode_generic(
    keys: &KeyStore,
    subject: &str,
    sequence: u64,
    bytes: &[u8],
) -> Result<DecodedCommit, StoreError> {
    let commit = decode_commit(subject, sequence, bytes)?;
    let mut payloads = commit
        .events
        .iter()
        .map(|e| payload_json(subject, sequence, e))
        .collect::<Result<Vec<_>, _>>()?;
    let found = keys_for(keys, &payloads.iter().collect::<Vec<_>>()).await?;
    let mut events = Vec::with_capacity(payloads.len());
    for (envelope, payload) in commit.events.iter().zip(payloads.iter_mut()) {
        unseal(payload, &found).map_err(|reason| StoreError::Decode {
            subject: subject.to_owned(),
            sequence,
            reason,
        })?;
        events.push(RecordedEvent {
            event_type: envelope.event_type.clone(),
            schema_version: envelope.schema_version,
            aggregate_version: envelope.aggregate_version,
            payload: std::mem::take(payload),
        });
    }
    Ok(DecodedCommit {
        stream_sequence: sequence,
        subject: subject.to_owned(),
        command_id: commit.command_id,
        org_id: commit.org_id,
        aggregate_type: commit.aggregate_type,
        aggregate_id: commit.aggregate_id,
        actor: commit.actor,
        correlation_id: commit.correlation_id,
        causation_id: commit.causation_id,
        recorded_at_micros: commit.recorded_at_micros,
        events,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_personal_objects_at_any_depth() {
        let v = json!({"a": {"$pd": "p1", "v": "x"}, "b": [{"$pd": "p2", "ct": "y"}], "c": {"$pd": "p3"}, "d": {"$pd": "p4", "v": null}});
        let mut s = BTreeSet::new();
        personal_subjects(&v, &mut s);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["p1", "p2"]);
    }
}
