//! Mid-stream failover at the accepting node: when the engine or the node
//! generating a stream fails after its first piece, the stream goes on on
//! another node from what was already sent (see `resume`), and the client
//! keeps one stream: no text lost, none repeated, the chunk ids, `created`
//! and `model` of its first chunk throughout, usage counting the whole
//! completion, and the nodes that generated parts named at the end.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::llm::error::LlmError;
use crate::llm::piece::{Piece, Pieces};
use crate::llm::request::LlmRequest;
use crate::llm::resume::{self, Resume};

/// Most times one stream moves to another node before it fails.
pub const MAX_FAILOVERS: u32 = 2;

/// Where a stream's parts were generated, as its last chunk tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    pub nodes: Vec<String>,
    pub failovers: u32,
}

/// A stream's provenance, filled in as it goes.
pub type SharedProvenance = Arc<Mutex<Provenance>>;

/// Reads a stream's provenance.
pub fn provenance_of(shared: &SharedProvenance) -> Provenance {
    shared.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// What starts the rest of a stream on another node.
#[async_trait]
pub(crate) trait Continuer: Send + Sync {
    /// Starts the rest of `request` after `sent` on a node other than
    /// those in `failed` where one can take it: that node, and the pieces.
    async fn continue_elsewhere(
        &self,
        request: &LlmRequest,
        sent: &Resume,
        failed: &[String],
    ) -> Result<(String, Pieces), LlmError>;
    /// Counts a failed source of a stream of `model`, and what came of it:
    /// `continued` elsewhere, `finished` here, or `failed`.
    fn record(&self, model: &str, outcome: &'static str);
}

/// What every chunk of the stream repeats from its first.
struct Head {
    id: Value,
    created: Value,
    model: Value,
}

/// A stream that moves to another node when its source fails.
struct Continuing {
    continuer: Arc<dyn Continuer>,
    request: LlmRequest,
    source: Pieces,
    /// Nodes that generated a part and failed (tried last).
    failed: Vec<String>,
    node: String,
    head: Option<Head>,
    sent: Resume,
    /// Tokens sent before the current part began.
    part_base: u32,
    finished: bool,
    provenance: SharedProvenance,
}

/// The rest of a stream whose first piece `first` came from `node`: moves
/// to another node when its source fails before the stream finishes.
/// `provenance` names `node` and counts the moves.
pub(crate) fn continuing(
    continuer: Arc<dyn Continuer>,
    request: LlmRequest,
    node: String,
    first: &Piece,
    rest: Pieces,
    provenance: SharedProvenance,
) -> Pieces {
    let mut state = Continuing {
        continuer,
        request,
        source: rest,
        failed: Vec::new(),
        node,
        head: None,
        sent: Resume::default(),
        part_base: 0,
        finished: false,
        provenance,
    };
    state.read(first.clone());
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

impl Continuing {
    async fn next(&mut self) -> Option<Result<Piece, LlmError>> {
        loop {
            match self.source.next().await {
                Some(Ok(piece)) => return Some(Ok(self.read(piece))),
                None => return None,
                Some(Err(error)) if self.finished => {
                    tracing::debug!(%error, "a stream's source failed after it finished");
                    return None;
                }
                Some(Err(error)) => {
                    if let Err(error) = self.fail_over(error).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Continues on another node after `error` ended the current part.
    async fn fail_over(&mut self, error: LlmError) -> Result<(), LlmError> {
        let failovers = provenance_of(&self.provenance).failovers;
        if failovers >= MAX_FAILOVERS {
            self.continuer.record(&self.request.model, "failed");
            return Err(LlmError::failed(format!("the stream broke off {} times; the last: {error}", failovers + 1)));
        }
        tracing::warn!(node = %self.node, tokens = self.sent.tokens, %error, "a stream's source failed; continuing it on another node");
        self.failed.push(std::mem::take(&mut self.node));
        self.part_base = self.sent.tokens;
        if resume::remaining(&self.request, &self.sent) == Some(0) {
            // Every token is out; only the end is missing, made here.
            let end = resume::nothing_left(&self.request).into_iter().map(Ok);
            self.source = Box::pin(futures_util::stream::iter(end));
            self.continuer.record(&self.request.model, "finished");
            return Ok(());
        }
        let continued = self.continuer.continue_elsewhere(&self.request, &self.sent, &self.failed).await;
        self.continuer.record(&self.request.model, if continued.is_ok() { "continued" } else { "failed" });
        let (node, pieces) = continued.map_err(|next| {
            LlmError::failed(format!("the stream broke off ({error}) and could not go on elsewhere: {}", next.message))
        })?;
        let mut provenance = self.provenance.lock().unwrap_or_else(PoisonError::into_inner);
        provenance.failovers += 1;
        if !provenance.nodes.contains(&node) {
            provenance.nodes.push(node.clone());
        }
        (self.node, self.source) = (node, pieces);
        Ok(())
    }

    /// Notes what `piece` sends and, in a continued part, gives it the
    /// stream's own id, `created` and `model`, no second role, and usage
    /// that counts the tokens of the earlier parts.
    fn read(&mut self, piece: Piece) -> Piece {
        let Ok(mut chunk) = serde_json::from_str::<Value>(&piece.data) else { return piece };
        let choice = &chunk["choices"][0];
        let text = choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or_default();
        self.sent.add(text, &piece.tokens);
        self.finished |= !choice["finish_reason"].is_null();
        let Some(head) = &self.head else {
            let field = |name: &str| chunk.get(name).cloned().unwrap_or(Value::Null);
            self.head = Some(Head { id: field("id"), created: field("created"), model: field("model") });
            return piece;
        };
        if self.failed.is_empty() {
            return piece;
        }
        chunk["id"] = head.id.clone();
        chunk["created"] = head.created.clone();
        chunk["model"] = head.model.clone();
        let delta =
            chunk.get_mut("choices").and_then(|choices| choices.get_mut(0)).and_then(|choice| choice.get_mut("delta"));
        if let Some(delta) = delta.and_then(Value::as_object_mut) {
            delta.remove("role");
        }
        if let Some(usage) = chunk["usage"].as_object_mut() {
            let number = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
            let base = u64::from(self.part_base);
            // The part's prompt held the tokens sent before it.
            let (completion, prompt) =
                (number("completion_tokens") + base, number("prompt_tokens").saturating_sub(base));
            usage.insert("completion_tokens".into(), completion.into());
            usage.insert("prompt_tokens".into(), prompt.into());
            usage.insert("total_tokens".into(), (completion + prompt).into());
        }
        Piece { data: chunk.to_string(), tokens: piece.tokens }
    }
}

#[cfg(test)]
mod tests;
