//! What one client may send and how many may connect: each bound is a
//! `gpumesh node` setting (SPEC section 9), checked before anything is
//! allocated for it.

/// Bounds on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, bytes (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Most elements in one tensor (`--max-tensor-elements`).
    pub max_tensor_elements: usize,
    /// Most inputs, and most requested outputs, in one request (`--max-inputs`).
    pub max_inputs: usize,
}

impl Default for Limits {
    /// 64 MiB bodies, 16 Mi elements per tensor, 256 inputs.
    fn default() -> Self {
        Self { max_body_bytes: 64 * 1024 * 1024, max_tensor_elements: 16 * 1024 * 1024, max_inputs: 256 }
    }
}

/// How the HTTP server runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub limits: Limits,
    /// Client API tokens; none leaves the API open.
    pub tokens: crate::ApiTokens,
    /// Most client connections served at once (`--max-connections`); more
    /// wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Most connections one client address holds at once
    /// (`--max-client-connections`); its next ones are closed at once.
    pub max_client_connections: usize,
    /// A connection with no byte in or out for this long is closed
    /// (`--idle-timeout-secs`). Longer than any request may take.
    pub idle_timeout: std::time::Duration,
    /// A request's headers must have arrived within this time
    /// (`--header-timeout-secs`), or its connection is closed.
    pub header_timeout: std::time::Duration,
    /// Least average rate of a request body after [`crate::BODY_GRACE`],
    /// bytes a second (`--min-body-rate`); 0: none.
    pub min_body_rate: u64,
}

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of `--max-client-connections`.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 256;
/// Default of `--idle-timeout-secs`.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
/// Default of `--header-timeout-secs` (SPEC section 9).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 30;
/// Default of `--min-body-rate`, bytes a second.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            tokens: crate::ApiTokens::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            idle_timeout: std::time::Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            header_timeout: std::time::Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            min_body_rate: DEFAULT_MIN_BODY_RATE,
        }
    }
}

/// Reads a request body of at most `max` bytes: refused from its
/// `Content-Length` before it is read, or as soon as it grows past `max`
/// (413, with `what_to_do`).
pub(crate) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    max: usize,
    what_to_do: &str,
) -> Result<axum::body::Bytes, crate::ApiError> {
    let too_large = || {
        let message =
            format!("the request body is larger than {max} bytes, this node's --max-body-bytes; {what_to_do}");
        crate::ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, message)
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_large())
}
