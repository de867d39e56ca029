//! Client API tokens (SPEC section 9). With tokens configured, every
//! endpoint but the health checks needs `Authorization: Bearer <token>`.
//! A browser opens the status page once as `/?token=<token>`: the node
//! answers with a session cookie (`HttpOnly`, `SameSite=Strict`) and a
//! redirect to `/`, so the token leaves the address bar and the history;
//! the page and its event stream (an `EventSource` cannot send headers)
//! then go by the cookie, which reads (GET) accept and writes do not. The
//! session is derived from the token's digest: no state to keep, valid
//! while the token is listed. Tokens and sessions are kept and compared as
//! BLAKE3 digests, whose equality is constant time, and every configured
//! token is compared, so neither the time nor the answer tells which
//! token came close.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
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

    /// The session cookie's value for a browser that presented `token`.
    fn session_for(token: &str) -> String {
        session_of(&blake3::hash(token.as_bytes())).to_hex().to_string()
    }

    /// Whether `presented` is the session of one of the tokens.
    fn accepts_session(&self, presented: &str) -> bool {
        let Ok(presented) = blake3::Hash::from_hex(presented) else { return false };
        self.digests.iter().fold(false, |accepted, known| accepted | (session_of(known) == presented))
    }
}

/// The name of the status page's session cookie.
const SESSION_COOKIE: &str = "gpumesh_session";

fn session_of(digest: &blake3::Hash) -> blake3::Hash {
    blake3::keyed_hash(digest.as_bytes(), b"gpumesh status page session")
}

/// The bearer token of a request.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim())
}

/// The `token` query parameter of the status page's address.
fn page_token(request: &Request) -> Option<String> {
    if request.method() != Method::GET || request.uri().path() != "/" {
        return None;
    }
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
    query.get("token").cloned()
}

/// The session cookie of a request.
fn session(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
}

/// 303 to the page's address without the token, with the session cookie.
fn start_session(token: &str) -> Response {
    let cookie = cookie::Cookie::build((SESSION_COOKIE, ApiTokens::session_for(token)))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .build();
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// Lets a request through when the API is open, it is a health check, it
/// carries a valid token, or it reads with a valid session cookie; starts
/// a session for the page opened with a valid token; answers 401 with a
/// JSON error otherwise.
pub(crate) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = &state.options.tokens;
    if tokens.is_open() || request.uri().path().starts_with("/v2/health/") {
        return next.run(request).await;
    }
    const WRONG: &str = "the API token is not valid: use one listed in the node's --api-token-file";
    if let Some(token) = bearer(&request) {
        return if tokens.accepts(token) { next.run(request).await } else { unauthorized(WRONG) };
    }
    if let Some(token) = page_token(&request) {
        return if tokens.accepts(&token) { start_session(&token) } else { unauthorized(WRONG) };
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    match session(&request) {
        Some(session) if reads && tokens.accepts_session(&session) => next.run(request).await,
        Some(_) if reads => unauthorized(
            "the status page session is not valid (was its token removed?): open the page again as /?token=<token>",
        ),
        _ => unauthorized(
            "this node requires an API token: send Authorization: Bearer <token> (in a browser, open the page once as /?token=<token>)",
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

    #[test]
    fn a_session_is_valid_exactly_while_its_token_is_listed() {
        let tokens = ApiTokens::new(["alpha-token".to_string()]);
        let session = ApiTokens::session_for("alpha-token");
        assert!(tokens.accepts_session(&session));
        assert!(!tokens.accepts(&session), "a session is not a token");
        assert!(!tokens.accepts_session("alpha-token") && !tokens.accepts_session(""));
        assert!(!tokens.accepts_session(&ApiTokens::session_for("beta-token")));
        assert!(!ApiTokens::new(["beta-token".to_string()]).accepts_session(&session), "revoked with its token");
    }
}
