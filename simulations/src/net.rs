//! chitchat over turmoil's simulated UDP.
//!
//! chitchat does not expose its wire encoding, so a datagram carries an
//! 8-byte token and the envelope itself waits in an in-process mailbox.
//! Loss, latency and partitions apply to the token, so they apply to gossip
//! exactly as on a real network.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gpumesh_membership::transport::{ChitchatEnvelope, ChitchatMessage, RecvOutcome, SendOutcome, Socket, Transport};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::trace::TraceLog;

/// Envelopes kept for tokens that may still arrive; older ones were lost.
const MAILBOX_CAPACITY: usize = 100_000;

struct MailboxInner {
    next_token: u64,
    envelopes: HashMap<u64, ChitchatEnvelope>,
    order: VecDeque<u64>,
    /// Share of datagrams lost, drawn from `rng`.
    loss_rate: f64,
    rng: StdRng,
}

/// Envelopes in flight, shared by every simulated node.
#[derive(Clone)]
pub(crate) struct Mailbox(Arc<Mutex<MailboxInner>>);

impl Mailbox {
    /// An empty mailbox whose losses are drawn from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(MailboxInner {
            next_token: 0,
            envelopes: HashMap::new(),
            order: VecDeque::new(),
            loss_rate: 0.0,
            rng: StdRng::seed_from_u64(seed ^ 0x6C05_5EED),
        })))
    }

    /// Loses `rate` of the datagrams sent from now on.
    pub(crate) fn set_loss_rate(&self, rate: f64) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).loss_rate = rate;
    }

    /// Whether the next datagram is lost.
    fn lose(&self) -> bool {
        let mut inner = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rate = inner.loss_rate;
        rate > 0.0 && inner.rng.random_bool(rate)
    }

    fn put(&self, envelope: ChitchatEnvelope) -> u64 {
        let mut inner = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = inner.next_token;
        inner.next_token += 1;
        inner.envelopes.insert(token, envelope);
        inner.order.push_back(token);
        while inner.order.len() > MAILBOX_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.envelopes.remove(&old);
            }
        }
        token
    }

    fn take(&self, token: u64) -> Option<ChitchatEnvelope> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).envelopes.remove(&token)
    }
}

/// The gossip transport of simulated nodes.
pub(crate) struct SimTransport {
    pub(crate) mailbox: Mailbox,
    pub(crate) trace: TraceLog,
    /// This host's simulated IP, for the trace.
    pub(crate) host_ip: IpAddr,
}

fn kind(envelope: &ChitchatEnvelope) -> &'static str {
    match envelope.message {
        ChitchatMessage::Syn { .. } => "syn",
        ChitchatMessage::SynAck { .. } => "synack",
        ChitchatMessage::Ack { .. } => "ack",
        ChitchatMessage::BadCluster => "badcluster",
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = turmoil::net::UdpSocket::bind(listen_addr).await?;
        let local = SocketAddr::new(self.host_ip, listen_addr.port());
        Ok(Box::new(SimSocket { socket, local, mailbox: self.mailbox.clone(), trace: self.trace.clone() }))
    }
}

struct SimSocket {
    socket: turmoil::net::UdpSocket,
    local: SocketAddr,
    mailbox: Mailbox,
    trace: TraceLog,
}

#[async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        let kind = kind(&envelope);
        if self.mailbox.lose() {
            self.trace.record(format_args!("lost {} -> {to} {kind}", self.local));
            return Ok(SendOutcome { num_bytes_sent: 8 });
        }
        let token = self.mailbox.put(envelope);
        self.trace.record(format_args!("send {} -> {to} {kind} #{token}", self.local));
        // A send to an unreachable host is a lost datagram, not a broken transport.
        if let Err(error) = self.socket.send_to(&token.to_le_bytes(), to).await {
            tracing::trace!(%to, %error, "simulated datagram dropped");
        }
        Ok(SendOutcome { num_bytes_sent: 8 })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let mut buf = [0u8; 8];
        loop {
            let (len, from_addr) = self.socket.recv_from(&mut buf).await?;
            if len != buf.len() {
                continue;
            }
            let token = u64::from_le_bytes(buf);
            if let Some(envelope) = self.mailbox.take(token) {
                self.trace.record(format_args!("recv {} <- {from_addr} #{token}", self.local));
                return Ok(RecvOutcome { from_addr, envelope, num_bytes_received: len });
            }
        }
    }
}
