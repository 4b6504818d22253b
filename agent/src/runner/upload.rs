//! The upload side of the running agent: the task that sends the outbox and
//! the raw timelines to the gateway and keeps the org's privacy policy and
//! classification rules current.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use trackhrs_domain::categories::CategoryRule;
use trackhrs_schemas::agent::v1::GetPolicyRequest;
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;

use super::{AgentConfig, Classify, Shared, UploadState, wall_now_ms};
use crate::aw::store::{AwError, AwStore};
use crate::privacy::Policy;
use crate::sync::{SyncError, Uploaded, Uploader};

/// What the gateway says about the token's device.
struct Session {
    policy: Policy,
    device: String,
    last_seq: u64,
    last_end_ms: Option<i64>,
    last_timeline_seq: u64,
    rules_version: u32,
    rules: Vec<CategoryRule>,
    /// The gateway records retractions (an older one does not).
    accepts_retractions: bool,
}

async fn fetch_policy(
    session: &mut AgentSessionClient<Channel>,
    bearer: &MetadataValue<Ascii>,
) -> Result<Session, tonic::Status> {
    let mut request = tonic::Request::new(GetPolicyRequest {});
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let p = session.get_policy(request).await?.into_inner();
    Ok(Session {
        policy: Policy {
            capture_titles: p.capture_titles,
            capture_urls: p.capture_urls,
        },
        device: p.device_id,
        last_seq: p.last_batch_seq,
        last_end_ms: (p.last_span_end_unix_ms > 0).then_some(p.last_span_end_unix_ms),
        last_timeline_seq: p.last_timeline_seq,
        rules_version: p.rules_version,
        rules: p
            .category_rules
            .into_iter()
            .map(|r| CategoryRule {
                name: r.name,
                regex: r.regex,
                ignore_case: r.ignore_case,
                score: r.score,
            })
            .collect(),
        accepts_retractions: p.accepts_retractions,
    })
}

fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

pub(super) async fn upload_loop(
    shared: Arc<Shared>,
    aw: Arc<Mutex<AwStore>>,
    config: AgentConfig,
    channel: Channel,
    bearer: MetadataValue<Ascii>,
) {
    // The policy carries the org's rules: up to 1,000 categories with
    // regexes of up to 4 KiB, above tonic's default 4 MiB limit.
    let mut session = AgentSessionClient::new(channel.clone()).max_decoding_message_size(16 << 20);
    let mut uploader = match Uploader::new(channel, &config.token, config.sync.clone()) {
        Ok(u) => u,
        Err(e) => {
            shared.update(|s| {
                s.upload = UploadState::Refused {
                    reason: e.to_string(),
                }
            });
            return;
        }
    };
    let mut next_policy = Instant::now();
    let mut failures = 0u32;
    let mut policy_failures = 0u32;
    // Nothing is uploaded before the gateway named the device the token
    // belongs to in this run (the outbox may hold another device's batches).
    let mut bound = false;
    // What the last policy said about retractions (None: not reached yet).
    let mut retractions_accepted: Option<bool> = None;
    let mut pause = Duration::ZERO;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shared.wake_uploader.notified() => {}
            }
        }
        let stopping = stopping || shared.stop.load(Ordering::SeqCst);
        if Instant::now() >= next_policy && !stopping {
            match fetch_policy(&mut session, &bearer).await {
                Ok(Session {
                    policy,
                    device,
                    last_seq,
                    last_end_ms,
                    last_timeline_seq,
                    rules_version,
                    rules,
                    accepts_retractions,
                }) => {
                    take_rules(&shared, rules_version, rules);
                    if !accepts_retractions && retractions_accepted != Some(false) {
                        tracing::warn!(
                            "the gateway does not record retractions (it is older than this agent); time deleted locally waits in the outbox until it does"
                        );
                    }
                    retractions_accepted = Some(accepts_retractions);
                    uploader.accept_retractions(accepts_retractions);
                    match crate::lock(&aw).align_timeline(&device, last_timeline_seq) {
                        Ok(true) => tracing::warn!(
                            last_timeline_seq,
                            "the raw timelines' batch is numbered again (another device, or the gateway holds later batches)"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "cannot align the raw timelines' batches")
                        }
                    }
                    let stored = {
                        let mut outbox = shared.outbox();
                        outbox
                            .bind_device(&device)
                            .and_then(|renumbered| {
                                if renumbered {
                                    tracing::warn!(
                                        "the token belongs to another device than the outbox's batches; they are numbered again"
                                    );
                                }
                                outbox.align(last_seq, last_end_ms)
                            })
                            .and_then(|behind| {
                                if behind {
                                    tracing::warn!(
                                        last_seq,
                                        "the gateway holds later batches of this device than this outbox (it was lost or reset); numbering goes on after them"
                                    );
                                }
                                outbox.set_policy(policy)
                            })
                    };
                    if let Err(e) = &stored {
                        tracing::error!(error = %e, "cannot store the privacy policy");
                    }
                    if shared.policy() != Some(policy) {
                        tracing::info!(?policy, "privacy policy in force");
                    }
                    *crate::lock(&shared.policy) = Some(policy);
                    bound = stored.is_ok() || bound;
                    policy_failures = 0;
                    shared.update(|s| s.policy = Some(policy));
                    next_policy = Instant::now() + config.policy_every;
                }
                Err(status) if refused(&status) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(status) => {
                    policy_failures += 1;
                    let error = super::with_causes(&status);
                    tracing::info!(error, "cannot fetch the privacy policy yet");
                    if !bound {
                        // Nothing can be uploaded before the gateway was
                        // reached once: say why (an untrusted certificate,
                        // a wrong address, the gateway down).
                        shared.update(|s| {
                            s.upload = UploadState::Retrying {
                                error: format!("cannot reach the gateway: {error}"),
                            }
                        });
                    }
                    next_policy = Instant::now() + uploader.backoff(policy_failures);
                }
            }
        }
        let policy = shared.policy().unwrap_or(Policy::STRICT);
        pause = config.upload_every;
        if !bound {
            pause = next_policy.saturating_duration_since(Instant::now());
            if stopping {
                return;
            }
            continue;
        }
        loop {
            match uploader.upload_next(&shared.outbox, &policy).await {
                Ok(Uploaded::Nothing) => {
                    failures = 0;
                    shared.update(|s| {
                        s.waiting = 0;
                        s.upload = UploadState::UpToDate {
                            at_ms: wall_now_ms(),
                        };
                    });
                    break;
                }
                Ok(_) => {
                    failures = 0;
                    let waiting = shared.outbox().waiting().unwrap_or_default();
                    shared.update(|s| s.waiting = waiting);
                }
                Err(SyncError::Unauthorized(status)) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    pause = uploader.backoff(failures).max(e.wait());
                    tracing::info!(error = %e, ?pause, "upload failed; the batch stays in the outbox");
                    shared.update(|s| {
                        s.upload = UploadState::Retrying {
                            error: e.to_string(),
                        }
                    });
                    break;
                }
            }
        }
        if failures == 0 {
            match upload_timelines(&shared, &aw, &config, &mut uploader, &policy).await {
                Ok(()) => {}
                Err(SyncError::Unauthorized(status)) => {
                    stop_uploads(&shared, &status);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    pause = uploader.backoff(failures).max(e.wait());
                    tracing::info!(error = %e, ?pause, "raw timeline upload failed; the changes stay queued");
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Queues the raw timelines' settled changes (off the async workers: it may
/// read many events) and uploads the queue.
async fn upload_timelines(
    shared: &Shared,
    aw: &Arc<Mutex<AwStore>>,
    config: &AgentConfig,
    uploader: &mut Uploader,
    policy: &Policy,
) -> Result<(), SyncError> {
    let settled_us = (wall_now_ms() - config.settle.as_millis().min(i64::MAX as u128) as i64)
        .saturating_mul(1000);
    let store = aw.clone();
    let max = config.sync.max_spans;
    tokio::task::spawn_blocking(move || crate::lock(&store).queue_changes(settled_us, max * 10))
        .await
        .map_err(|e| SyncError::Timelines(AwError::Corrupt(format!("queueing stopped: {e}"))))??;
    while uploader.upload_timeline_next(aw, policy).await? {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(())
}

/// Keeps the org's rules when they changed (compared whole: a version
/// number alone is per org, and the default rules of version 0 change with
/// the classifier). None sent (the gateway could not read them just now):
/// the agent keeps its own.
fn take_rules(shared: &Shared, version: u32, rules: Vec<CategoryRule>) {
    {
        let c = crate::lock(&shared.classify);
        if rules.is_empty() || (c.version == Some(version) && c.rules == rules) {
            return;
        }
    }
    if let Err(e) = shared.outbox().set_rules(version, &rules) {
        tracing::error!(error = %e, "cannot keep the classification rules");
    }
    tracing::info!(version, "classification rules in force");
    *crate::lock(&shared.classify) = Classify {
        version: Some(version),
        rules,
        compiled: None,
    };
}

fn stop_uploads(shared: &Shared, status: &tonic::Status) {
    tracing::error!(
        reason = status.message(),
        "the gateway refuses this device's token; uploads stopped, the outbox is kept (enroll the device again)"
    );
    shared.update(|s| {
        s.upload = UploadState::Refused {
            reason: status.message().to_owned(),
        }
    });
}
