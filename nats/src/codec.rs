//! Encoding of domain events into stored commits and back, including the
//! sealing of personal data and the upcasting of old schema versions.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use prost::Message as _;
use serde_json::{Map, Value};
use trackhrs_domain::personal::{SEALED_KEY, SUBJECT_KEY, VALUE_KEY};
use trackhrs_domain::{Aggregate, DomainEvent};
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

use crate::error::StoreError;
use crate::keys::{DataKey, KeyStore, NONCE_LEN, SubjectKeys, TAG_LEN};

/// JSON key of the key id stored beside a sealed value.
const KEY_ID_KEY: &str = "k";

/// What follows the tag in an event with data.
const DATA_KEY: &[u8] = b",\"data\":";

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

/// A domain event's payload as JSON bytes: the `data` of its adjacently
/// tagged serialization (`{"type": ..., "data": ...}`, as serde's derive
/// writes it: `data` last), `null` when it has none. Serialized straight to
/// bytes (no JSON tree per event) and cut out in place (no second buffer).
/// The tag is compared as bytes: event types are identifiers, which JSON
/// writes without escapes.
pub(crate) fn event_payload<E: DomainEvent>(event: &E) -> Result<Vec<u8>, StoreError> {
    let mut json = serde_json::to_vec(event).map_err(|e| StoreError::Encode(e.to_string()))?;
    let event_type = event.event_type();
    let tagged = json
        .strip_prefix(b"{\"type\":\"".as_slice())
        .and_then(|r| r.strip_prefix(event_type.as_bytes()))
        .and_then(|r| r.strip_prefix(b"\"".as_slice()));
    let Some(rest) = tagged else {
        return Err(StoreError::Encode(format!(
            "{event_type}: must serialize adjacently tagged, with the serde tag \"type\" equal to event_type()"
        )));
    };
    if rest == b"}" {
        return Ok(b"null".to_vec());
    }
    if !rest.starts_with(DATA_KEY) {
        return Err(StoreError::Encode(format!(
            "{event_type}: must serialize as {{\"type\": ..., \"data\": ...}}"
        )));
    }
    let prefix = json.len() - rest.len() + DATA_KEY.len();
    // The closing brace of the tagged object.
    json.pop();
    json.drain(..prefix);
    Ok(json)
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

/// How `PersonalData` starts in serialized JSON.
const PERSONAL_START: &[u8] = b"{\"$pd\":";
/// The key that marks personal data. A JSON string holds no unescaped
/// quote, so these bytes are always a key, never part of a string.
const PERSONAL_KEY: &[u8] = b"\"$pd\":";

/// Searches for [`PERSONAL_KEY`]; built once.
static PERSONAL_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PERSONAL_KEY));

/// One personal-data object in serialized JSON, exactly as `PersonalData`
/// serializes itself: `{"$pd":<subject>,"v":<string or null>}`.
struct PersonalSpan<'a> {
    /// Its bytes in the JSON.
    range: std::ops::Range<usize>,
    /// The subject's JSON string, as written.
    subject_json: std::ops::Range<usize>,
    subject: Cow<'a, str>,
    value: Option<Cow<'a, str>>,
}

/// The JSON string token starting at `at` (a quote): its end (exclusive),
/// and whether it holds an escape.
fn string_end(json: &[u8], at: usize) -> Option<(usize, bool)> {
    if json.get(at) != Some(&b'"') {
        return None;
    }
    let mut escaped = false;
    let mut i = at + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'"' {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i += 2;
    }
}

/// The text of the JSON string token `token`: borrowed when it holds no
/// escape (serde_json writes every other character as it is), else decoded.
fn json_str<'a>(token: &'a [u8], escaped: bool, what: &str) -> Result<Cow<'a, str>, StoreError> {
    if !escaped {
        let inner = &token[1..token.len() - 1];
        if let Ok(text) = std::str::from_utf8(inner) {
            return Ok(Cow::Borrowed(text));
        }
    }
    serde_json::from_slice::<String>(token)
        .map(Cow::Owned)
        .map_err(|e| StoreError::Encode(format!("personal data {what}: {e}")))
}

/// The personal-data object starting at `at`, if it has `PersonalData`'s
/// exact shape (anything else is not personal data and stays as it is).
fn personal_at(json: &[u8], at: usize) -> Result<Option<PersonalSpan<'_>>, StoreError> {
    let subject_at = at + PERSONAL_START.len();
    let Some((subject_end, subject_escaped)) = string_end(json, subject_at) else {
        return Ok(None);
    };
    let Some(after) = json[subject_end..].strip_prefix(b",\"v\":".as_slice()) else {
        return Ok(None);
    };
    let value_at = json.len() - after.len();
    let (value_end, value) = if after.starts_with(b"null") {
        (value_at + 4, None)
    } else {
        let Some((end, escaped)) = string_end(json, value_at) else {
            return Ok(None);
        };
        (end, Some(json_str(&json[value_at..end], escaped, "value")?))
    };
    if json.get(value_end) != Some(&b'}') {
        return Ok(None);
    }
    let subject = json_str(&json[subject_at..subject_end], subject_escaped, "subject")?;
    Ok(Some(PersonalSpan {
        range: at..value_end + 1,
        subject_json: subject_at..subject_end,
        subject,
        value,
    }))
}

/// Every personal-data object of serialized JSON, in order. Fails closed:
/// a `$pd` key anywhere but at the start of an object of `PersonalData`'s
/// exact shape (for example one flattened into another struct, or inside an
/// internally tagged enum) is an error, never stored unsealed.
fn find_personal(json: &[u8]) -> Result<Vec<PersonalSpan<'_>>, StoreError> {
    let mut found = Vec::new();
    for key_at in PERSONAL_FINDER.find_iter(json) {
        let personal = match key_at.checked_sub(1) {
            Some(at) if json[at] == b'{' => personal_at(json, at)?,
            _ => None,
        };
        let Some(p) = personal else {
            return Err(StoreError::Encode(
                "personal data must serialize exactly as PersonalData does: {\"$pd\": subject, \"v\": value}"
                    .into(),
            ));
        };
        found.push(p);
    }
    Ok(found)
}

/// Seals every clear personal value in serialized JSON documents of `org`
/// with the subjects' keys in that org (created on first use):
/// `{"$pd":s,"v":x}` becomes `{"$pd":s,"k":<key id>,"ct":<sealed x>}`, and
/// an erased value (`"v":null`) becomes `{"$pd":s}`.
pub(crate) async fn seal_all(
    keys: &KeyStore,
    org: &str,
    docs: &mut [Vec<u8>],
) -> Result<(), StoreError> {
    let found = docs
        .iter()
        .map(|d| find_personal(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut by_subject: HashMap<&str, Arc<DataKey>> = HashMap::new();
    for p in found.iter().flatten() {
        if p.value.is_some() && !by_subject.contains_key(&*p.subject) {
            by_subject.insert(&p.subject, keys.key_for_write(org, &p.subject).await?);
        }
    }
    let sealed_docs = docs
        .iter()
        .zip(&found)
        .map(|(doc, found)| {
            (!found.is_empty())
                .then(|| sealed(doc, found, &by_subject))
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(found);
    for (doc, sealed_doc) in docs.iter_mut().zip(sealed_docs) {
        if let Some(sealed_doc) = sealed_doc {
            *doc = sealed_doc;
        }
    }
    Ok(())
}

/// `doc` with the personal-data objects `found` in it sealed with `keys`
/// (which hold every subject with a value).
fn sealed(
    doc: &[u8],
    found: &[PersonalSpan],
    keys: &HashMap<&str, Arc<DataKey>>,
) -> Result<Vec<u8>, StoreError> {
    // Each sealed value grows by its key id and field names and by base64's
    // third of nonce, ciphertext and tag: reserved at once, not regrown.
    let growth: usize = found
        .iter()
        .map(|p| {
            p.value
                .as_ref()
                .map_or(0, |v| 40 + (NONCE_LEN + TAG_LEN + v.len()).div_ceil(3) * 4)
        })
        .sum();
    let mut out = Vec::with_capacity(doc.len() + growth);
    let mut copied = 0;
    for p in found {
        out.extend_from_slice(&doc[copied..p.range.start]);
        out.extend_from_slice(PERSONAL_START);
        out.extend_from_slice(&doc[p.subject_json.clone()]);
        if let Some(clear) = &p.value {
            let key = keys.get(&*p.subject).ok_or_else(|| {
                StoreError::Keys(format!("no data key for {} while sealing", p.subject))
            })?;
            out.extend_from_slice(b",\"");
            out.extend_from_slice(KEY_ID_KEY.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(key.id.as_bytes());
            out.extend_from_slice(b"\",\"");
            out.extend_from_slice(SEALED_KEY.as_bytes());
            out.extend_from_slice(b"\":\"");
            key.seal_into(&p.subject, clear, &mut out)?;
            out.push(b'"');
        }
        out.push(b'}');
        copied = p.range.end;
    }
    out.extend_from_slice(&doc[copied..]);
    Ok(out)
}

/// Opens one sealed value of `subject`: the clear value, or `None` when the
/// subject's key is gone (erased) or was replaced. A value whose key exists
/// but which does not authenticate has been tampered with: an error.
fn open_sealed(
    keys: Option<&SubjectKeys>,
    subject: &str,
    key_id: Option<&str>,
    sealed: &str,
) -> Result<Option<String>, String> {
    match keys.zip(key_id).and_then(|(keys, id)| keys.by_id(id)) {
        Some(key) => key
            .open(subject, sealed)
            .map(Some)
            .ok_or_else(|| format!("personal data of {subject} fails authentication")),
        None => Ok(None),
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
    pub subject: Cow<'a, str>,
    /// Id of the key that sealed the value.
    #[serde(rename = "k", borrow, default)]
    key_id: Option<Cow<'a, str>>,
    /// The sealed value; absent once erased at write.
    #[serde(rename = "ct", borrow, default)]
    sealed: Option<Cow<'a, str>>,
    /// A clear value, as the generic reading accepts one.
    #[serde(rename = "v", borrow, default)]
    clear: Option<Cow<'a, str>>,
}

impl StoredPersonal<'_> {
    /// The clear value, opened with `keys` (the subject's keys as
    /// [`KeyStore::key_for_read`] gives them); `None` when the subject was
    /// erased. Err when the value does not authenticate under its key.
    /// Reads as [`decode_generic`] does.
    pub fn open(&self, keys: &SubjectKeys) -> Result<Option<String>, String> {
        match (&self.sealed, &self.clear) {
            (Some(sealed), _) => {
                open_sealed(Some(keys), &self.subject, self.key_id.as_deref(), sealed)
            }
            (None, clear) => Ok(clear.as_deref().map(str::to_owned)),
        }
    }
}

/// Replaces every sealed personal value with its clear value, or with an
/// erased marker when the subject's key is gone. A value whose key exists
/// but which does not authenticate has been tampered with: an error.
pub(crate) fn unseal(value: &mut Value, keys: &HashMap<String, SubjectKeys>) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if let Some(subject) = personal_object(map).map(str::to_owned) {
                let key_id = map.remove(KEY_ID_KEY);
                if let Some(Value::String(sealed)) = map.remove(SEALED_KEY) {
                    let key_id = match &key_id {
                        Some(Value::String(id)) => Some(id.as_str()),
                        _ => None,
                    };
                    let clear = open_sealed(keys.get(&subject), &subject, key_id, &sealed)?;
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

/// Looks up the keys in `org` of every subject with personal data in
/// `values`.
pub(crate) async fn keys_for(
    keys: &KeyStore,
    org: &str,
    values: &[&Value],
) -> Result<HashMap<String, SubjectKeys>, StoreError> {
    let mut subjects = BTreeSet::new();
    values
        .iter()
        .for_each(|v| personal_subjects(v, &mut subjects));
    let mut found = HashMap::with_capacity(subjects.len());
    for s in subjects {
        let key = keys.key_for_read(org, &s).await?;
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

/// Opens one stored event of aggregate `A`: upcast to the current schema,
/// personal data opened with `keys` (or shown erased), as the domain's own
/// event type.
pub(crate) fn open_event<A: Aggregate>(
    envelope: &EventEnvelope,
    payload: Value,
    keys: &HashMap<String, SubjectKeys>,
) -> Result<A::Event, String> {
    let mut upcast = A::upcast(&envelope.event_type, envelope.schema_version, payload)
        .map_err(|e| e.to_string())?;
    unseal(&mut upcast, keys)?;
    join_event::<A>(&envelope.event_type, upcast)
}

/// One stored commit of one aggregate type, its events decoded into the
/// domain's own event type (upcast, personal data opened or shown erased).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedCommit<E> {
    /// Global stream sequence: a reader's checkpoint.
    pub stream_sequence: u64,
    /// Organization.
    pub org_id: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Who issued the command.
    pub actor: String,
    /// Recorded at, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The events, oldest first.
    pub events: Vec<E>,
}

/// Decodes a stored commit of aggregate `A` into its typed events. A commit
/// of another aggregate type, or an event this code cannot read, is a
/// [`StoreError::Decode`].
pub async fn decode_typed<A: Aggregate>(
    keys: &KeyStore,
    subject: &str,
    sequence: u64,
    bytes: &[u8],
) -> Result<TypedCommit<A::Event>, StoreError> {
    let decode_err = |reason: String| StoreError::Decode {
        subject: subject.to_owned(),
        sequence,
        reason,
    };
    let commit = decode_commit(subject, sequence, bytes)?;
    if commit.aggregate_type != A::TYPE {
        return Err(decode_err(format!(
            "commit of aggregate type {:?} read as {}",
            commit.aggregate_type,
            A::TYPE
        )));
    }
    let payloads = commit
        .events
        .iter()
        .map(|e| payload_json(subject, sequence, e))
        .collect::<Result<Vec<_>, _>>()?;
    let found = keys_for(keys, &commit.org_id, &payloads.iter().collect::<Vec<_>>()).await?;
    let events = commit
        .events
        .iter()
        .zip(payloads)
        .map(|(envelope, payload)| open_event::<A>(envelope, payload, &found))
        .collect::<Result<Vec<_>, _>>()
        .map_err(decode_err)?;
    Ok(TypedCommit {
        stream_sequence: sequence,
        org_id: commit.org_id,
        aggregate_id: commit.aggregate_id,
        actor: commit.actor,
        recorded_at_micros: commit.recorded_at_micros,
        events,
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
    let found = keys_for(keys, &commit.org_id, &payloads.iter().collect::<Vec<_>>()).await?;
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
    use proptest::prelude::*;
    use serde_json::json;
    use trackhrs_domain::PersonId;
    use trackhrs_domain::personal::PersonalData;

    use super::*;

    fn test_key(byte: u8) -> Arc<DataKey> {
        Arc::new(DataKey::from_bytes(&[byte; 40]).unwrap())
    }

    /// Seals serialized JSON with test keys, the way `seal_all` does.
    fn seal_with(json: &[u8], keys: &HashMap<&str, Arc<DataKey>>) -> Vec<u8> {
        sealed(json, &find_personal(json).unwrap(), keys).unwrap()
    }

    #[test]
    fn personal_data_serializes_in_the_shape_the_sealer_finds() {
        let p1 = PersonId::new("p1").unwrap();
        let clear = serde_json::to_vec(&PersonalData::new(p1.clone(), "a\"b")).unwrap();
        assert_eq!(clear, br#"{"$pd":"p1","v":"a\"b"}"#);
        assert!(clear.starts_with(PERSONAL_START));
        let found = find_personal(&clear).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (&*found[0].subject, found[0].value.as_deref()),
            ("p1", Some("a\"b"))
        );
        assert_eq!(found[0].range, 0..clear.len());
    }

    #[test]
    fn only_whole_personal_objects_are_sealed() {
        let keys = HashMap::from([("p1", test_key(1))]);
        // The marker inside a string is text.
        let text = br#"{"a":"{\"$pd\":\"p1\",\"v\":\"x\"}"}"#;
        assert_eq!(seal_with(text, &keys), text.to_vec());
        // Personal data in any other shape is refused, never stored clear.
        for other in [
            br#"{"b":{"$pd":"p1","w":"x"}}"#.as_slice(),
            br#"{"c":{"$pd":"p1","v":"x","d":1}}"#,
            br#"{"kind":"Email","$pd":"p1","v":"x"}"#,
            br#"{"v":"x","$pd":"p1"}"#,
            br#"{"$pd":null,"v":"x"}"#,
        ] {
            assert!(
                matches!(find_personal(other), Err(StoreError::Encode(_))),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // An erased value keeps only its subject.
        assert_eq!(
            seal_with(br#"[{"$pd":"p1","v":null}]"#, &keys),
            br#"[{"$pd":"p1"}]"#.to_vec()
        );
        let no_key = br#"{"$pd":"p2","v":"x"}"#;
        assert!(matches!(
            sealed(no_key, &find_personal(no_key).unwrap(), &keys),
            Err(StoreError::Keys(_))
        ));
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Event {
        Unit,
        Named { n: u32 },
    }

    impl DomainEvent for Event {
        fn event_type(&self) -> &'static str {
            match self {
                Self::Unit => "Unit",
                Self::Named { .. } => "Named",
            }
        }

        fn schema_version(&self) -> u32 {
            1
        }
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "kind")]
    enum Mistagged {
        Named { n: u32 },
    }

    impl DomainEvent for Mistagged {
        fn event_type(&self) -> &'static str {
            "Named"
        }

        fn schema_version(&self) -> u32 {
            1
        }
    }

    /// Serializes with the tag "Named" but names itself "Name".
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Misnamed {
        Named { n: u32 },
    }

    impl DomainEvent for Misnamed {
        fn event_type(&self) -> &'static str {
            "Name"
        }

        fn schema_version(&self) -> u32 {
            1
        }
    }

    #[test]
    fn an_event_payload_is_its_data_or_null() {
        assert_eq!(
            event_payload(&Event::Named { n: 7 }).unwrap(),
            br#"{"n":7}"#
        );
        assert_eq!(event_payload(&Event::Unit).unwrap(), b"null");
        assert!(matches!(
            event_payload(&Mistagged::Named { n: 7 }),
            Err(StoreError::Encode(_))
        ));
        assert!(matches!(
            event_payload(&Misnamed::Named { n: 7 }),
            Err(StoreError::Encode(_))
        ));
    }

    #[derive(Debug, serde::Serialize)]
    struct Sample {
        app: String,
        title: Option<PersonalData>,
        nested: Vec<(String, PersonalData)>,
    }

    proptest! {
        /// Sealing the bytes and opening the JSON tree gives back exactly
        /// what was serialized, whatever the text (quotes, backslashes,
        /// control characters, any Unicode, the marker itself).
        #[test]
        fn sealed_bytes_open_to_the_original(
            app in any::<String>(),
            title in proptest::option::of(any::<String>()),
            nested in proptest::collection::vec((any::<String>(), any::<String>(), any::<bool>()), 0..4),
        ) {
            let p1 = PersonId::new("p1").unwrap();
            let p2 = PersonId::new("p-2").unwrap();
            let sample = Sample {
                app: format!("{app}{{\"$pd\":\"p1\",\"v\":\"{app}\"}}"),
                title: title.map(|t| PersonalData::new(p1.clone(), t)),
                nested: nested
                    .into_iter()
                    .map(|(k, v, mine)| (k, PersonalData::new(if mine { p1.clone() } else { p2.clone() }, v)))
                    .collect(),
            };
            let json = serde_json::to_vec(&sample).unwrap();
            let keys = HashMap::from([("p1", test_key(1)), ("p-2", test_key(2))]);
            let sealed = seal_with(&json, &keys);
            let text = String::from_utf8(sealed.clone()).unwrap();
            prop_assert!(!text.contains("\"v\":\""), "no clear value left: {}", text);
            let mut opened: Value = serde_json::from_slice(&sealed).unwrap();
            let open_keys: HashMap<String, SubjectKeys> = keys
                .iter()
                .map(|(s, k)| ((*s).to_owned(), SubjectKeys::one(k.clone())))
                .collect();
            unseal(&mut opened, &open_keys).unwrap();
            prop_assert_eq!(opened, serde_json::to_value(&sample).unwrap());
        }
    }

    #[test]
    fn finds_personal_objects_at_any_depth() {
        let v = json!({"a": {"$pd": "p1", "v": "x"}, "b": [{"$pd": "p2", "ct": "y"}], "c": {"$pd": "p3"}, "d": {"$pd": "p4", "v": null}});
        let mut s = BTreeSet::new();
        personal_subjects(&v, &mut s);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["p1", "p2"]);
    }
}
