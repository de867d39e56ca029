//! Client API tokens (SPEC section 9). With tokens configured, every
//! endpoint but the health checks needs `Authorization: Bearer <token>`;
//! a browser may open the status page with `?token=<token>` instead (an
//! `EventSource` cannot send headers), and the page passes it on. Tokens
//! are kept and compared as BLAKE3 digests, whose equality is constant
//! time, and every configured token is compared, so neither the time nor
//! the answer tells which token came close.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// The tokens a node accepts; empty leaves the API open.
#[derive(Clone, Default)]
pub struct ApiTokens {
    digests: Arc<Vec<blake3::Hash>>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} configured)", self.digests.len())
    }
}

impl ApiTokens {
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self { digests: Arc::new(tokens.into_iter().map(|token| blake3::hash(token.as_bytes())).collect()) }
    }

    /// No token configured: every client is served.
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest = blake3::hash(presented.as_bytes());
        self.digests.iter().fold(false, |accepted, known| accepted | (*known == digest))
    }
}

/// The token of a request: its bearer token, else its `token` query parameter.
fn presented(request: &Request) -> Option<String> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string());
    bearer.or_else(|| {
        let Query(query) = Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
        query.get("token").cloned()
    })
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// Lets a request through when the API is open, it is a health check, or
/// it carries a valid token; answers 401 with a JSON error otherwise.
pub(crate) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.options.tokens.is_open() || request.uri().path().starts_with("/v2/health/") {
        return next.run(request).await;
    }
    match presented(&request) {
        Some(token) if state.options.tokens.accepts(&token) => next.run(request).await,
        Some(_) => unauthorized("the API token is not valid: use one listed in the node's --api-token-file"),
        None => unauthorized(
            "this node requires an API token: send Authorization: Bearer <token> (in a browser, add ?token=<token> to the page's address)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::ApiTokens;

    #[test]
    fn accepts_exactly_the_configured_tokens() {
        let tokens = ApiTokens::new(["alpha-token".to_string(), "beta-token".to_string()]);
        assert!(!tokens.is_open());
        assert!(tokens.accepts("alpha-token") && tokens.accepts("beta-token"));
        for wrong in ["", "alpha", "alpha-token ", "ALPHA-TOKEN", "beta-token2"] {
            assert!(!tokens.accepts(wrong), "{wrong:?} accepted");
        }
        assert!(ApiTokens::default().is_open());
    }
}
