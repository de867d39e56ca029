//! A listener that serves at most `max` connections at once: the next one
//! is accepted only when one closes (until then it waits in the kernel's
//! listen backlog), so no client can exhaust the node's file descriptors or
//! memory by opening connections. One client address holds at most
//! `per_client` of them: past that its new connections are closed at once,
//! so one client cannot take the slots of every other. A connection that
//! neither sends nor receives a byte for the idle timeout is closed, so idle
//! connections cannot hold every slot.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use gpumesh_actors::Clock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

pub(crate) struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_client: usize,
    idle_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl LimitedListener {
    pub(crate) fn new(
        inner: TcpListener,
        max: usize,
        per_client: usize,
        idle_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(max.max(1)));
        Self { inner, slots, clients: Arc::default(), per_client: per_client.max(1), idle_timeout, clock }
    }

    /// A place for one more connection of `client`, unless it holds
    /// `per_client` already.
    fn enter(&self, client: IpAddr) -> Option<ClientSlot> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let held = clients.entry(client).or_default();
        if *held >= self.per_client {
            return None;
        }
        *held += 1;
        Some(ClientSlot { clients: self.clients.clone(), client })
    }
}

/// One of a client address's connections, given back when dropped.
struct ClientSlot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = clients.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// A connection holding one of the listener's slots until it is dropped.
pub(crate) struct LimitedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _client: ClientSlot,
    idle_timeout: Duration,
    clock: Arc<dyn Clock>,
    /// Fires when the connection has been idle for `idle_timeout`.
    idle: Pin<Box<Sleep>>,
}

impl LimitedStream {
    fn active(&mut self) {
        let deadline = self.clock.now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// An error once the connection has been idle too long.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle for too long")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let slot = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            let Some(client) = self.enter(addr.ip()) else {
                tracing::debug!(client = %addr.ip(), held = self.per_client, "connection closed: its client holds --max-client-connections already");
                continue;
            };
            // Streams (server-sent events) go out event by event: no waiting
            // for an acknowledgement to batch small writes (Nagle).
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY on a client connection");
            }
            let idle = Box::pin(tokio::time::sleep(self.idle_timeout));
            let (idle_timeout, clock) = (self.idle_timeout, self.clock.clone());
            return (LimitedStream { stream, _slot: slot, _client: client, idle_timeout, clock, idle }, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.active();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => self.check_idle(cx),
            other => other,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
