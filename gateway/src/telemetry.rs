//! What every RPC gets around it: a request id (the caller's `x-request-id`
//! when well-formed, else a new one, echoed in the response), one tracing
//! span with the method and that id, the ids the use case records in its
//! commits (causation: the request; correlation: the caller's
//! `x-correlation-id`, else the request), and the RPC metrics: a count per
//! method and status code and a latency histogram per method.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message as _;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument as _;
use trackhrs_app::request::{self, RequestIds};

/// The metric label of every other path: streams (health's `Watch`,
/// reflection), whose status and latency this layer cannot see, and paths no
/// service has, which must not create a time series per request.
const OTHER_METHOD: &str = "other";

/// `/package.Service/Method` of every unary method the gateway's protocols
/// define.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut known = HashSet::new();
    for set in [
        trackhrs_schemas::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    if method.client_streaming() || method.server_streaming() {
                        continue;
                    }
                    known.insert(format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    known
});

/// The method's label: its path when it is a unary method of a service.
fn method_label(path: &str) -> String {
    if KNOWN_METHODS.contains(path) {
        path.to_owned()
    } else {
        OTHER_METHOD.to_owned()
    }
}

/// An id a caller may give: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
fn caller_id<B>(request: &Request<B>, header: &str) -> Option<String> {
    let value = request.headers().get(header)?.to_str().ok()?;
    trackhrs_app::command_id(value).ok()
}

/// The gRPC status code of a unary response: in the headers of a
/// trailers-only response (every error a handler returns), else OK (a
/// success carries 0 in its trailers).
fn status_code<B>(response: &Response<B>) -> String {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    format!("{:?}", tonic::Code::from_i32(code))
}

/// The layer that wraps every service of the gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc { inner }
    }
}

/// A service wrapped by [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for Rpc<S>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let request_id =
            caller_id(&request, "x-request-id").unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let correlation_id =
            caller_id(&request, "x-correlation-id").unwrap_or_else(|| request_id.clone());
        let span = tracing::info_span!("rpc", method = %method, request_id = %request_id);
        let echoed = HeaderValue::from_str(&request_id).ok();
        let ids = RequestIds {
            request_id,
            correlation_id,
        };
        let called = self.inner.call(request);
        let started = Instant::now();
        Box::pin(
            async move {
                let result = request::scope(ids, called).await;
                let code = match &result {
                    Ok(response) => status_code(response),
                    Err(_) => format!("{:?}", tonic::Code::Unknown),
                };
                let method = Arc::<str>::from(method);
                metrics::counter!(
                    "trackhrs_rpc_requests_total",
                    "method" => method.clone(),
                    "code" => code
                )
                .increment(1);
                metrics::histogram!("trackhrs_rpc_duration_seconds", "method" => method)
                    .record(started.elapsed().as_secs_f64());
                result.map(|mut response| {
                    if let Some(id) = echoed {
                        response.headers_mut().insert("x-request-id", id);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_defined_methods_are_labels() {
        assert_eq!(
            method_label("/trackhrs.agent.v1.AgentIngest/UploadBatch"),
            "/trackhrs.agent.v1.AgentIngest/UploadBatch"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/made.up/Path1"), OTHER_METHOD);
        assert_eq!(method_label("/grpc.health.v1.Health/Watch"), OTHER_METHOD);
    }
}
