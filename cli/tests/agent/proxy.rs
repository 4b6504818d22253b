//! The recording gRPC proxy between the agent and the gateway: sees exactly
//! what left the machine, and fails or loses replies on demand.

use super::*;

/// How the proxy treats uploads.
pub(crate) const PASS: u8 = 0;
pub(crate) const FAIL: u8 = 1;
pub(crate) const LOSE_REPLY: u8 = 2;
/// Answers the next upload that carries retractions as a gateway older than
/// them does (see [`Proxy::old_gateway`]), then passes: one replica of
/// several behind the gateway's address is older than the one that answered
/// the policy.
pub(crate) const OLD_ONCE: u8 = 3;

/// A gRPC proxy in front of the gateway's agent services: records every
/// upload as it arrived, and fails or loses replies on demand.
#[derive(Clone)]
pub(crate) struct Proxy {
    upstream: Channel,
    pub(crate) received: Arc<Mutex<Vec<agent_pb::UploadBatchRequest>>>,
    pub(crate) timelines: Arc<Mutex<Vec<agent_pb::UploadTimelineRequest>>>,
    pub(crate) mode: Arc<AtomicU8>,
    /// The same for raw-timeline uploads.
    pub(crate) timeline_mode: Arc<AtomicU8>,
    /// Answers as a gateway older than retractions does: the policy without
    /// `accepts_retractions`, uploads stored without their retractions and
    /// answered without `retractions_read`.
    pub(crate) old_gateway: Arc<AtomicBool>,
}

fn forwarded<T>(request: &Request<T>, message: T) -> Request<T> {
    let mut out = Request::new(message);
    if let Some(auth) = request.metadata().get("authorization") {
        out.metadata_mut().insert("authorization", auth.clone());
    }
    out
}

#[tonic::async_trait]
impl AgentIngest for Proxy {
    async fn upload_batch(
        &self,
        request: Request<agent_pb::UploadBatchRequest>,
    ) -> Result<Response<agent_pb::UploadBatchResponse>, Status> {
        self.received
            .lock()
            .unwrap()
            .push(request.get_ref().clone());
        let mut message = request.get_ref().clone();
        let old = self.old_gateway.load(Ordering::SeqCst)
            || (!message.retractions.is_empty()
                && self
                    .mode
                    .compare_exchange(OLD_ONCE, PASS, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok());
        if old {
            // Not a field it knows: dropped unread.
            message.retractions.clear();
        }
        let mut upstream = AgentIngestClient::new(self.upstream.clone());
        let mut reply = self
            .relay(
                &self.mode,
                upstream.upload_batch(forwarded(&request, message)),
            )
            .await?;
        if old {
            reply.get_mut().retractions_read = false;
        }
        Ok(reply)
    }

    async fn upload_timeline(
        &self,
        request: Request<agent_pb::UploadTimelineRequest>,
    ) -> Result<Response<agent_pb::UploadBatchResponse>, Status> {
        self.timelines
            .lock()
            .unwrap()
            .push(request.get_ref().clone());
        let message = request.get_ref().clone();
        let mut upstream = AgentIngestClient::new(self.upstream.clone());
        self.relay(
            &self.timeline_mode,
            upstream.upload_timeline(forwarded(&request, message)),
        )
        .await
    }
}

#[tonic::async_trait]
impl AgentSession for Proxy {
    async fn get_policy(
        &self,
        request: Request<agent_pb::GetPolicyRequest>,
    ) -> Result<Response<agent_pb::Policy>, Status> {
        let mut policy = AgentSessionClient::new(self.upstream.clone())
            .get_policy(forwarded(&request, agent_pb::GetPolicyRequest {}))
            .await?;
        if self.old_gateway.load(Ordering::SeqCst) {
            policy.get_mut().accepts_retractions = false;
        }
        Ok(policy)
    }
}

impl Proxy {
    pub(crate) fn new(upstream: Channel) -> Self {
        Self {
            upstream,
            received: Arc::default(),
            timelines: Arc::default(),
            mode: Arc::new(AtomicU8::new(PASS)),
            timeline_mode: Arc::new(AtomicU8::new(PASS)),
            old_gateway: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Fails the upload, or forwards it (and loses the reply once), as
    /// `mode` says.
    async fn relay<R>(
        &self,
        mode: &AtomicU8,
        upstream: impl Future<Output = Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status> {
        let now = mode.load(Ordering::SeqCst);
        if now == FAIL {
            return Err(Status::unavailable("the gateway is failing"));
        }
        let reply = upstream.await;
        if now == LOSE_REPLY {
            // Stored upstream; the reply never reaches the agent.
            mode.store(PASS, Ordering::SeqCst);
            return Err(Status::unavailable("connection reset"));
        }
        reply
    }

    /// Serves on `addr` until `down` fires.
    pub(crate) async fn serve(&self, addr: SocketAddr, down: tokio::sync::oneshot::Receiver<()>) {
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let proxy = self.clone();
        tokio::spawn(
            Server::builder()
                .add_service(AgentIngestServer::new(proxy.clone()))
                .add_service(AgentSessionServer::new(proxy))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = down.await;
                }),
        );
    }

    pub(crate) fn titles_sent(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.spans.iter().map(|s| s.title.clone()))
            .collect()
    }
}
