//! Batched direct get: reads the messages of one subject after a sequence in
//! one request, without creating a consumer and without stream info.

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::StoreError;

/// Messages asked for per request.
const BATCH: usize = 256;

/// One stored message as a direct get returns it.
pub(crate) struct RawMsg {
    /// Stream sequence.
    pub sequence: u64,
    /// Message body.
    pub payload: Bytes,
}

/// Every message on `subject` with a stream sequence above `after`, in order.
pub(crate) async fn subject_after(
    client: &Client,
    stream: &str,
    subject: &str,
    after: u64,
    timeout: Duration,
) -> Result<Vec<RawMsg>, StoreError> {
    let mut out = Vec::new();
    let mut from = after + 1;
    loop {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(StoreError::unavailable)?;
        let request = serde_json::json!({"seq": from, "next_by_subj": subject, "batch": BATCH});
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(StoreError::unavailable)?;
        let mut got = 0;
        loop {
            let msg = tokio::time::timeout(timeout, sub.next())
                .await
                .map_err(|_| StoreError::Unavailable(format!("direct get of {subject} timed out")))?
                .ok_or_else(|| {
                    StoreError::Unavailable("connection closed during direct get".into())
                })?;
            match msg.status.map(|s| s.as_u16()) {
                // End of batch, or nothing (more) on this subject.
                Some(204) | Some(404) => break,
                Some(code) => {
                    return Err(StoreError::Unavailable(format!(
                        "direct get of {subject} failed: {code} {}",
                        msg.description.unwrap_or_default()
                    )));
                }
                None => {
                    let sequence = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Sequence"))
                        .and_then(|v| v.as_str().parse::<u64>().ok())
                        .ok_or_else(|| {
                            StoreError::Unavailable("direct get reply without Nats-Sequence".into())
                        })?;
                    out.push(RawMsg {
                        sequence,
                        payload: msg.payload,
                    });
                    got += 1;
                }
            }
        }
        match out.last() {
            Some(last) if got == BATCH => from = last.sequence + 1,
            _ => return Ok(out),
        }
    }
}
