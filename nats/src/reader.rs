//! Reads the event log in stream order with each commit's global stream
//! sequence: what projections checkpoint on and what `trackhrs events tail` prints.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::codec::{DecodedCommit, decode_generic};
use crate::error::StoreError;
use crate::keys::KeyStore;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first message of the stream.
    Start,
    /// This stream sequence (a checkpoint plus one).
    Sequence(u64),
    /// Only commits stored after the read starts.
    New,
}

/// Most messages one pull of an ordered read asks for. async-nats asks for
/// 500 by default: with commits of 100-300 KB that outruns the 64 MiB the
/// server buffers for a client, which then drops the connection's messages
/// as a slow consumer (seen in `bench pipeline`: the server logged a slow
/// consumer and the run stalled).
pub const ORDERED_PULL_MAX: i64 = 100;

/// One item of a log read: a decoded commit, or a message that could not be
/// decoded (named by subject and sequence; the read goes on after it).
pub struct LogItem {
    /// The commit, or why it could not be decoded.
    pub commit: Result<DecodedCommit, StoreError>,
    /// Messages left in the stream after this one when it was delivered.
    pub pending: u64,
}

/// Reads `stream` in order from `from`, optionally filtered to `filter_subject`
/// (for example `evt.<org>.>`). Uses an ordered consumer: no server-side state
/// is left behind, and a gap or reconnect is repaired by the client.
pub async fn read(
    js: &jetstream::Context,
    keys: KeyStore,
    stream: &str,
    from: StartAt,
    filter_subject: Option<String>,
) -> Result<BoxStream<'static, LogItem>, StoreError> {
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(StoreError::unavailable)?;
    let deliver_policy = match from {
        StartAt::Start => DeliverPolicy::All,
        StartAt::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        StartAt::New => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            filter_subject: filter_subject.unwrap_or_default(),
            max_batch: ORDERED_PULL_MAX,
            ..Default::default()
        })
        .await
        .map_err(StoreError::unavailable)?;
    let messages = consumer.messages().await.map_err(StoreError::unavailable)?;
    Ok(messages
        .then(move |msg| {
            let keys = keys.clone();
            async move {
                match msg {
                    Ok(msg) => decode_message(&keys, msg).await,
                    Err(e) => LogItem {
                        commit: Err(StoreError::unavailable(e)),
                        pending: 0,
                    },
                }
            }
        })
        .boxed())
}

async fn decode_message(keys: &KeyStore, msg: Message) -> LogItem {
    let (sequence, pending) = match msg.info() {
        Ok(info) => (info.stream_sequence, info.pending),
        Err(e) => {
            return LogItem {
                commit: Err(StoreError::Decode {
                    subject: msg.subject.to_string(),
                    sequence: 0,
                    reason: format!("no stream metadata: {e}"),
                }),
                pending: 0,
            };
        }
    };
    LogItem {
        commit: decode_generic(keys, &msg.subject, sequence, &msg.payload).await,
        pending,
    }
}
