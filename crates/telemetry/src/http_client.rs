//! The OTLP exporter's HTTP client: `opentelemetry_http::HttpClient` over a blocking `ureq` agent. The SDK's batch
//! span processor exports from its own thread, so a blocking request there holds up no async runtime.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::time::Duration;

/// Response bodies beyond this are refused (an OTLP response is a few bytes; the SDK's own clients use 4 MiB).
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub(crate) struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    pub(crate) fn new(timeout: Duration) -> UreqClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // The exporter reads the status itself (and retries on 429/503), so a non-2xx is a response, not an error.
            .http_status_as_error(false)
            .build()
            .into();
        UreqClient { agent }
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let mut response = self.agent.run(request)?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()?;
        let mut out = Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        Ok(out.body(Bytes::from(body))?)
    }
}
