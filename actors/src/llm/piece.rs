//! What engines yield: the pieces of one answer, in order.

use std::pin::Pin;

use futures_util::Stream;

use crate::llm::error::LlmError;

/// One piece of an answer: a chunk of a stream (the JSON of one server-sent
/// event) or the one JSON object of an answer that does not stream, with
/// the token ids it carries where the engine tells them (llama.cpp), so
/// that a stream can go on elsewhere at the token level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub data: String,
    pub tokens: Vec<u32>,
}

impl Piece {
    /// A piece whose token ids are not known.
    pub fn new(data: String) -> Self {
        Self { data, tokens: Vec::new() }
    }
}

/// The pieces of one answer, in order; an `Err` ends it.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, LlmError>> + Send>>;
