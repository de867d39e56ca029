use std::collections::VecDeque;

use serde_json::{Value, json};

use super::*;
use crate::llm::request::{Endpoint, Hints, parse};

/// One scripted continuation: the node that takes over and what it sends, or why none could.
type Part = Result<(String, Vec<Result<Piece, LlmError>>), LlmError>;

/// Scripted continuations: each call takes the next, and is remembered.
#[derive(Default)]
struct Script {
    parts: Mutex<VecDeque<Part>>,
    calls: Mutex<Vec<(Resume, Vec<String>)>>,
    outcomes: Mutex<Vec<&'static str>>,
}

#[async_trait]
impl Continuer for Script {
    async fn continue_elsewhere(
        &self,
        _request: &LlmRequest,
        sent: &Resume,
        failed: &[String],
    ) -> Result<(String, Pieces), LlmError> {
        self.calls.lock().expect("calls").push((sent.clone(), failed.to_vec()));
        let part = self.parts.lock().expect("parts").pop_front().expect("a scripted part");
        part.map(|(node, pieces)| (node, Box::pin(futures_util::stream::iter(pieces)) as Pieces))
    }

    fn record(&self, _model: &str, outcome: &'static str) {
        self.outcomes.lock().expect("outcomes").push(outcome);
    }
}

fn request(max_tokens: u32) -> LlmRequest {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
        "stream": true, "stream_options": {"include_usage": true}});
    parse(Endpoint::Chat, body.to_string().as_bytes(), &Hints::default()).expect("valid")
}

/// A chat chunk of engine `id` with `text`, its first with a role.
fn chunk(id: &str, text: &str, first: bool) -> Result<Piece, LlmError> {
    let mut delta = json!({"content": text});
    if first {
        delta["role"] = json!("assistant");
    }
    let chunk = json!({"id": id, "created": id.len(), "model": id, "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    Ok(Piece::new(chunk.to_string()))
}

fn finish(id: &str, prompt: u64, completion: u64) -> Vec<Result<Piece, LlmError>> {
    let end = json!({"id": id, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]});
    let usage = json!({"id": id, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
    vec![Ok(Piece::new(end.to_string())), Ok(Piece::new(usage.to_string()))]
}

fn broke() -> Result<Piece, LlmError> {
    Err(LlmError::unavailable("node a died while generating"))
}

async fn run(
    script: Arc<Script>,
    max_tokens: u32,
    first: Result<Piece, LlmError>,
    rest: Vec<Result<Piece, LlmError>>,
) -> (Vec<Value>, Option<LlmError>, Provenance) {
    let provenance = Arc::new(Mutex::new(Provenance { nodes: vec!["a".into()], failovers: 0 }));
    let first = first.expect("a first piece");
    let rest: Pieces = Box::pin(futures_util::stream::iter(rest));
    let mut pieces = continuing(script, request(max_tokens), "a".into(), &first, rest, provenance.clone());
    let mut chunks = vec![serde_json::from_str(&first.data).expect("json")];
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(piece) => chunks.push(serde_json::from_str(&piece.data).expect("json")),
            Err(error) => return (chunks, Some(error), provenance_of(&provenance)),
        }
    }
    (chunks, None, provenance_of(&provenance))
}

fn text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_broken_stream_goes_on_elsewhere_as_one_stream() {
    let script = Arc::new(Script::default());
    let mut part = vec![chunk("b-9", " river", true), chunk("b-9", " stone", false)];
    part.extend(finish("b-9", 12, 2));
    script.parts.lock().expect("parts").push_back(Ok(("b".into(), part)));
    let rest = vec![chunk("a-1", " mesh", false), chunk("a-1", " node", false), broke()];
    let (chunks, error, provenance) = run(script.clone(), 5, chunk("a-1", " the", true), rest).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), " the mesh node river stone", "nothing lost, nothing repeated");
    let calls = script.calls.lock().expect("calls").clone();
    assert_eq!(calls, vec![(Resume { text: " the mesh node".into(), tokens: 3, ids: vec![] }, vec!["a".to_string()])]);
    for chunk in &chunks {
        assert_eq!((&chunk["id"], &chunk["created"], &chunk["model"]), (&json!("a-1"), &json!(3), &json!("a-1")));
    }
    let roles = chunks.iter().filter(|chunk| chunk["choices"][0]["delta"].get("role").is_some()).count();
    assert_eq!(roles, 1, "one role, in the first chunk");
    let usage = &chunks.last().expect("usage")["usage"];
    assert_eq!(usage, &json!({"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}), "the whole completion");
    assert_eq!(provenance, Provenance { nodes: vec!["a".into(), "b".into()], failovers: 1 });
    assert_eq!(*script.outcomes.lock().expect("outcomes"), vec!["continued"]);
}

#[tokio::test]
async fn token_ids_travel_to_the_next_part() {
    let script = Arc::new(Script::default());
    script.parts.lock().expect("parts").push_back(Ok(("b".into(), finish("b", 5, 1))));
    let with_ids = |text: &str, ids: Vec<u32>| {
        let mut piece = chunk("a", text, false).expect("chunk");
        piece.tokens = ids;
        Ok(piece)
    };
    let (_, error, _) =
        run(script.clone(), 9, with_ids(" the", vec![259]), vec![with_ids(" mesh", vec![260, 261]), broke()]).await;
    assert!(error.is_none());
    let (sent, _) = script.calls.lock().expect("calls")[0].clone();
    assert_eq!((sent.tokens, sent.exact_ids()), (3, Some(&[259, 260, 261][..])));
}

#[tokio::test]
async fn moves_are_bounded_then_the_stream_ends_with_an_error() {
    let script = Arc::new(Script::default());
    for node in ["b", "c"] {
        script.parts.lock().expect("parts").push_back(Ok((node.into(), vec![chunk(node, " x", false), broke()])));
    }
    let (chunks, error, provenance) = run(script.clone(), 50, chunk("a", " the", true), vec![broke()]).await;
    let error = error.expect("an error once the moves run out");
    assert!(error.message.contains("broke off 3 times"), "{error}");
    assert_eq!(text(&chunks), " the x x");
    assert_eq!(provenance.failovers, MAX_FAILOVERS);
    let failed: Vec<Vec<String>> =
        script.calls.lock().expect("calls").iter().map(|(_, failed)| failed.clone()).collect();
    assert_eq!(failed, vec![vec!["a".to_string()], vec!["a".into(), "b".into()]], "every failed node avoided");
    assert_eq!(*script.outcomes.lock().expect("outcomes"), vec!["continued", "continued", "failed"]);
}

#[tokio::test]
async fn no_node_to_go_on_ends_the_stream_with_an_error() {
    let script = Arc::new(Script::default());
    script.parts.lock().expect("parts").push_back(Err(LlmError::unavailable("no node can serve model m")));
    let (chunks, error, provenance) = run(script, 50, chunk("a", " the", true), vec![broke()]).await;
    let error = error.expect("an error");
    assert!(error.message.contains("could not go on elsewhere: no node can serve"), "{error}");
    assert_eq!((chunks.len(), provenance.failovers), (1, 0));
}

#[tokio::test]
async fn a_stream_with_every_token_sent_is_finished_here() {
    let script = Arc::new(Script::default());
    let (chunks, error, provenance) =
        run(script.clone(), 2, chunk("a", " the", true), vec![chunk("a", " mesh", false), broke()]).await;
    assert!(error.is_none());
    assert!(script.calls.lock().expect("calls").is_empty(), "no engine asked for nothing");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[3]["usage"]["completion_tokens"], 2);
    assert_eq!(chunks[3]["id"], "a");
    assert_eq!(provenance.failovers, 0);
}

#[tokio::test]
async fn a_source_failing_after_its_finish_ends_the_stream_quietly() {
    let script = Arc::new(Script::default());
    let mut rest = finish("a", 3, 1);
    rest.push(broke());
    let (chunks, error, _) = run(script.clone(), 9, chunk("a", " the", true), rest).await;
    assert!(error.is_none());
    assert_eq!(chunks.len(), 3);
    assert!(script.calls.lock().expect("calls").is_empty());
}
