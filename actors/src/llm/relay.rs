//! Streams between nodes: the accepting node reads a stream that another
//! node generates, piece by piece as it comes, over the node link (the
//! protocol is in `wire`). This module holds both ends:
//!
//! - reading (accepting node): [`Relay::open_remote`] opens the stream on
//!   the serving node and returns its pieces; credit goes back as the
//!   client reads, a cancel when the client goes away, and the stream ends
//!   with an error when the serving node dies or falls silent.
//! - serving: [`Relay::serve`] runs a stream another node opened, sending
//!   pieces no further than a window ahead of the reader's credit, and
//!   stops the engine request on a cancel or when the reader's node dies.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use gpumesh_membership::ClusterView;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::forward::client::PeerClient;
use crate::links::LinkedPeers;
use crate::llm::engine::{Piece, Pieces};
use crate::llm::error::LlmError;
use crate::llm::model::LlmModel;
use crate::llm::request::LlmRequest;
use crate::llm::resume::Resume;
use crate::llm::wire::{Frame, FrameKind, Open, Opened, WINDOW, decode, encode};
use crate::view::until_dead;

/// Longest a serving node waits for its reader's credit: a client that
/// reads nothing for this long is gone (its connection's idle timeout is
/// shorter).
const CREDIT_WAIT_MAX: Duration = Duration::from_secs(600);

/// Both ends of the streams of this node.
pub struct Relay {
    me: String,
    peers: PeerClient,
    view: watch::Receiver<Arc<ClusterView>>,
    links: watch::Receiver<Arc<LinkedPeers>>,
    models: Arc<Vec<Arc<LlmModel>>>,
    clock: Arc<dyn Clock>,
    /// Longest a reader waits for the next frame.
    idle_timeout: Duration,
    next_stream: AtomicU64,
    /// Streams this node reads: where their frames go.
    reading: Mutex<BTreeMap<u64, mpsc::Sender<FrameKind>>>,
    /// Streams this node serves, by reader and number: their credit, and
    /// the task that generates them.
    serving: Mutex<BTreeMap<(String, u64), Served>>,
}

/// What a relay works with.
pub(crate) struct RelayArgs {
    /// This node's name.
    pub(crate) me: String,
    /// Calls to other nodes.
    pub(crate) peers: PeerClient,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    /// The nodes linked to this one: a read stream whose node's link drops
    /// fails at once, before gossip declares the node dead.
    pub(crate) links: watch::Receiver<Arc<LinkedPeers>>,
    /// The language models this node serves.
    pub(crate) models: Arc<Vec<Arc<LlmModel>>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// A read stream with no frame for this long fails.
    pub(crate) idle_timeout: Duration,
    /// The first stream number: a restarted node must not take the frames
    /// of its former self's streams for its own.
    pub(crate) first_stream: u64,
}

struct Served {
    credit: watch::Sender<u64>,
    task: tokio::task::AbortHandle,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    pub(crate) fn new(args: RelayArgs) -> Self {
        let RelayArgs { me, peers, view, links, models, clock, idle_timeout, first_stream } = args;
        Self {
            me,
            peers,
            view,
            links,
            models,
            clock,
            idle_timeout,
            next_stream: AtomicU64::new(first_stream),
            reading: Mutex::default(),
            serving: Mutex::default(),
        }
    }

    /// Streams this node serves for others now.
    pub fn serving_count(&self) -> usize {
        lock(&self.serving).len()
    }

    /// Opens `request` (or with `resume` its rest) on `target`; its pieces
    /// come back as they are made.
    pub async fn open_remote(
        self: &Arc<Self>,
        target: &str,
        request: LlmRequest,
        resume: Option<Resume>,
    ) -> Result<Pieces, LlmError> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(WINDOW as usize + 2);
        lock(&self.reading).insert(stream, sender);
        let open = Open { from: self.me.clone(), stream, request, resume };
        if let Err(error) = self.peers.llm_open(target, encode(&open)).await {
            lock(&self.reading).remove(&stream);
            return Err(error);
        }
        Ok(Box::pin(RemotePieces {
            relay: self.clone(),
            target: target.to_string(),
            stream,
            receiver,
            next_seq: 0,
            credited: 0,
            ended: false,
            dead: Box::pin(until_gone(self.view.clone(), self.links.clone(), target.to_string())),
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
        }))
    }

    /// An [`Open`] from another node (its bytes): starts serving it.
    pub fn serve(self: &Arc<Self>, bytes: &[u8]) -> Vec<u8> {
        let opened: Opened = match decode::<Open>(bytes) {
            None => Err(LlmError::invalid(None, "malformed stream opening")),
            Some(open) => self.start_serving(open),
        };
        encode(&opened)
    }

    fn start_serving(self: &Arc<Self>, open: Open) -> Opened {
        let Some(model) = self.models.iter().find(|m| m.spec.name == open.request.model).cloned() else {
            let name = &open.request.model;
            return Err(LlmError::unavailable(format!("model {name} is not served on {}", self.me)));
        };
        // The pieces go back over this node's link to the reader: without
        // one (a reader that just restarted, not yet trusted here), the
        // reader would wait for frames that cannot come. Refused, it tries
        // another node at once.
        if !self.links.borrow().contains_key(&open.from) {
            return Err(LlmError::unavailable(format!("{} has no link back to {} yet", self.me, open.from)));
        }
        let (credit, credit_rx) = watch::channel(0);
        let key = (open.from.clone(), open.stream);
        let mut serving = lock(&self.serving);
        let task = tokio::spawn(self.clone().run_served(open, model, credit_rx));
        serving.insert(key, Served { credit, task: task.abort_handle() });
        Ok(())
    }

    /// A [`Frame`] from another node (its bytes).
    pub fn frame(&self, bytes: &[u8]) {
        let Some(frame) = decode::<Frame>(bytes) else {
            tracing::warn!("dropped a malformed stream frame");
            return;
        };
        match frame.kind {
            kind @ (FrameKind::Piece { .. } | FrameKind::End { .. }) => {
                if !self.deliver(frame.stream, kind) {
                    // Nobody here reads it (its reader left, or this node
                    // restarted): stop it where it runs.
                    tokio::spawn(self.send(&frame.from, frame.stream, FrameKind::Cancel));
                }
            }
            FrameKind::Credit { upto } => {
                if let Some(served) = lock(&self.serving).get(&(frame.from, frame.stream)) {
                    served.credit.send_if_modified(|credit| {
                        let more = upto > *credit;
                        *credit = (*credit).max(upto);
                        more
                    });
                }
            }
            FrameKind::Cancel => {
                if let Some(served) = lock(&self.serving).remove(&(frame.from, frame.stream)) {
                    // Dropping the engine's pieces cancels the request there.
                    served.task.abort();
                }
            }
        }
    }

    /// Hands a frame to the reader of `stream`; false when there is none.
    fn deliver(&self, stream: u64, kind: FrameKind) -> bool {
        let mut reading = lock(&self.reading);
        let Some(sender) = reading.get(&stream) else { return false };
        if sender.try_send(kind).is_err() {
            // A serving node beyond its window, or a reader gone: end it.
            tracing::warn!(stream, "a stream's frames overflowed its window; ending it");
            reading.remove(&stream);
            return false;
        }
        true
    }

    fn send(&self, to: &str, stream: u64, kind: FrameKind) -> impl Future<Output = bool> + Send + 'static {
        let frame = encode(&Frame { from: self.me.clone(), stream, kind });
        let (peers, to) = (self.peers.clone(), to.to_string());
        async move { peers.llm_frame(&to, frame).await }
    }

    async fn run_served(self: Arc<Self>, open: Open, model: Arc<LlmModel>, credit: watch::Receiver<u64>) {
        let outcome = self.pump(&open, &model, credit).await;
        lock(&self.serving).remove(&(open.from.clone(), open.stream));
        if let Err(error) = &outcome {
            tracing::debug!(model = %model.spec.name, reader = %open.from, %error, "served stream ended early");
        }
        self.send(&open.from, open.stream, FrameKind::End { error: outcome.err() }).await;
    }

    /// Sends the pieces of `open` to its reader, at most a window beyond its
    /// credit.
    async fn pump(&self, open: &Open, model: &LlmModel, mut credit: watch::Receiver<u64>) -> Result<(), LlmError> {
        let mut pieces = model.start(&open.request, open.resume.as_ref()).await?;
        let mut seq = 0;
        while let Some(piece) = pieces.next().await {
            let Piece { data, tokens } = piece?;
            while seq >= *credit.borrow_and_update() + WINDOW {
                tokio::select! {
                    changed = tokio::time::timeout(CREDIT_WAIT_MAX, credit.changed()) => {
                        if !matches!(changed, Ok(Ok(()))) {
                            return Err(LlmError::failed("the reader stopped reading"));
                        }
                    }
                    () = until_dead(self.view.clone(), open.from.clone()) => {
                        return Err(LlmError::failed(format!("reader {} died", open.from)));
                    }
                }
            }
            if !self.send(&open.from, open.stream, FrameKind::Piece { seq, data, tokens }).await {
                return Err(LlmError::failed(format!("no link to reader {}", open.from)));
            }
            seq += 1;
        }
        Ok(())
    }
}

/// Resolves when `node` is dead in the view or its link drops: "died" or
/// "lost its link".
async fn until_gone(
    view: watch::Receiver<Arc<ClusterView>>,
    mut links: watch::Receiver<Arc<LinkedPeers>>,
    node: String,
) -> &'static str {
    let unlinked = async {
        while links.borrow_and_update().contains_key(&node) {
            if links.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = until_dead(view, node.clone()) => "died",
        () = unlinked => "lost its link",
    }
}

/// The pieces of a stream another node generates, as they arrive.
struct RemotePieces {
    relay: Arc<Relay>,
    target: String,
    stream: u64,
    receiver: mpsc::Receiver<FrameKind>,
    next_seq: u64,
    credited: u64,
    ended: bool,
    /// Resolves when the serving node dies or its link drops, saying which.
    dead: Pin<Box<dyn Future<Output = &'static str> + Send>>,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl RemotePieces {
    fn end(&mut self, error: Option<LlmError>) -> Poll<Option<Result<Piece, LlmError>>> {
        self.ended = true;
        lock(&self.relay.reading).remove(&self.stream);
        Poll::Ready(error.map(Err))
    }
}

impl Stream for RemotePieces {
    type Item = Result<Piece, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(FrameKind::Piece { seq, data, tokens })) if seq == self.next_seq => {
                    self.next_seq += 1;
                    if self.next_seq - self.credited >= WINDOW / 2 {
                        self.credited = self.next_seq;
                        let credit = FrameKind::Credit { upto: self.next_seq };
                        tokio::spawn(self.relay.send(&self.target, self.stream, credit));
                    }
                    let deadline = self.relay.clock.now() + self.relay.idle_timeout;
                    self.idle.as_mut().reset(deadline);
                    return Poll::Ready(Some(Ok(Piece { data, tokens })));
                }
                Poll::Ready(Some(FrameKind::Piece { seq, .. })) => {
                    let error = LlmError::failed(format!("piece {seq} came where {} was due", self.next_seq));
                    return self.end(Some(error));
                }
                Poll::Ready(Some(FrameKind::End { error })) => return self.end(error),
                Poll::Ready(Some(FrameKind::Credit { .. } | FrameKind::Cancel)) => continue,
                Poll::Ready(None) => return self.end(Some(LlmError::failed("the stream was lost"))),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(why) = self.dead.as_mut().poll(cx) {
            let error = LlmError::unavailable(format!("node {} {why} while generating", self.target));
            return self.end(Some(error));
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            let error =
                LlmError::failed(format!("node {} sent nothing for {:?}", self.target, self.relay.idle_timeout));
            return self.end(Some(error));
        }
        Poll::Pending
    }
}

impl Drop for RemotePieces {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        lock(&self.relay.reading).remove(&self.stream);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(self.relay.send(&self.target, self.stream, FrameKind::Cancel));
        }
    }
}
