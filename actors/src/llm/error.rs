//! Errors of the language-model path, in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`), each with its HTTP
//! status. An engine's own 4xx travels as it came.

use serde::{Deserialize, Serialize};

/// OpenAI's error `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    NotFound,
    RateLimit,
    Server,
}

impl ErrorKind {
    /// OpenAI's name of it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::NotFound => "not_found_error",
            Self::RateLimit => "rate_limit_error",
            Self::Server => "server_error",
        }
    }

    /// The kind OpenAI gives an HTTP `status`.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 => Self::Authentication,
            404 => Self::NotFound,
            429 => Self::RateLimit,
            status if status >= 500 => Self::Server,
            _ => Self::InvalidRequest,
        }
    }
}

/// Why a language-model request was not served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    /// The HTTP status of the answer.
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: ErrorKind,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after_s: Option<u64>,
    /// The engine's own error body, passed back as it is.
    pub engine_body: Option<String>,
}

impl LlmError {
    fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after_s: None, engine_body: None }
    }

    /// 400: the request is malformed; `param` names the field at fault.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self { param: param.map(String::from), ..Self::new(400, ErrorKind::InvalidRequest, message) }
    }

    /// 404: no node of the cluster serves `model`.
    pub fn model_not_found(model: &str) -> Self {
        let message = format!(
            "the model {model:?} does not exist: no node of the cluster serves it; GET /v1/models lists those that do"
        );
        Self {
            param: Some("model".into()),
            code: Some("model_not_found".into()),
            ..Self::new(404, ErrorKind::InvalidRequest, message)
        }
    }

    /// 429: the model's queue is full here.
    pub fn queue_full(model: &str, queued: usize, retry_after_s: u64) -> Self {
        let message = format!("model {model} has {queued} requests waiting, its limit; retry after {retry_after_s} s");
        Self {
            retry_after_s: Some(retry_after_s),
            code: Some("rate_limit_exceeded".into()),
            ..Self::new(429, ErrorKind::RateLimit, message)
        }
    }

    /// 503: no node can serve it now (it may later).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after_s: Some(1), ..Self::new(503, ErrorKind::Server, message) }
    }

    /// 500: serving it failed (an engine's 5xx, a broken stream).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(500, ErrorKind::Server, message)
    }

    /// The engine answered `status` with `body` before generating anything.
    pub fn from_engine(status: u16, body: String) -> Self {
        let message = engine_message(&body).unwrap_or_else(|| format!("the engine answered {status}"));
        Self { engine_body: Some(body), ..Self::new(status, ErrorKind::of_status(status), message) }
    }

    /// An error of `status` saying `message`, of the kind OpenAI gives it.
    pub fn with_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::of_status(status), message)
    }

    /// The client's mistake (4xx): trying another node would not help.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status) && self.status != 429
    }

    /// The JSON body of the answer: the engine's own when it sent one,
    /// else OpenAI's error object.
    pub fn body(&self) -> String {
        if let Some(body) = &self.engine_body
            && serde_json::from_str::<serde_json::Value>(body).is_ok_and(|value| value.get("error").is_some())
        {
            return body.clone();
        }
        self.openai_body().to_string()
    }

    /// OpenAI's error object for this error.
    pub fn openai_body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind.as_str(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// The message of an engine's OpenAI-shaped error body.
fn engine_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("error")?.get("message")?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape_and_status() {
        let table = [
            (LlmError::invalid(Some("messages"), "messages must be an array"), 400, "invalid_request_error"),
            (LlmError::model_not_found("x"), 404, "invalid_request_error"),
            (LlmError::queue_full("m", 5, 2), 429, "rate_limit_error"),
            (LlmError::unavailable("no node"), 503, "server_error"),
            (LlmError::failed("broke"), 500, "server_error"),
        ];
        for (error, status, kind) in table {
            assert_eq!(error.status, status);
            let body: serde_json::Value = serde_json::from_str(&error.body()).expect("json");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert_eq!(body["error"]["message"], error.message);
        }
        assert_eq!(LlmError::model_not_found("x").openai_body()["error"]["code"], "model_not_found");
        assert_eq!(LlmError::invalid(Some("n"), "bad").openai_body()["error"]["param"], "n");
        assert!(!LlmError::queue_full("m", 1, 1).is_client_error());
        assert!(LlmError::invalid(None, "x").is_client_error());
    }

    #[test]
    fn an_engine_error_body_is_passed_back_as_it_is() {
        let own = r#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#;
        let error = LlmError::from_engine(400, own.into());
        assert_eq!((error.status, error.body().as_str()), (400, own));
        assert_eq!(error.message, "the request exceeds the available context size");
        let plain = LlmError::from_engine(502, "bad gateway".into());
        assert_eq!(plain.message, "the engine answered 502");
        assert!(plain.body().contains("\"server_error\""), "a body that is no OpenAI error gets one");
    }
}
