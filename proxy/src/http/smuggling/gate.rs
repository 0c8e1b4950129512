//! What the framing guard (reading) and the router (answering) of one HTTP/1 connection tell each
//! other. The guard cannot know on its own whether the bytes after an `Upgrade:` or `CONNECT`
//! request are a tunnel or the next pipelined request: that depends on the answer. So it holds
//! them back until the router has answered that request, and the router records here whether the
//! answer switched protocols. The guard also marks the first head whose framing it refused, so
//! that if hyper would accept such a head anyway, the router refuses it.
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::task::Waker;

const NONE: u64 = u64::MAX;
const UNDECIDED: u8 = 0;
const TUNNEL: u8 = 1;
const REFUSED: u8 = 2;

/// The decision about an upgrade request, as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Tunnel,
    Refused,
}

pub struct Gate {
    /// Requests the router has started on this connection (hyper serves HTTP/1 requests one at
    /// a time and in order, so this is also the index of the head each one came from).
    started: AtomicU64,
    /// Requests the router has answered (their response head is out).
    answered: AtomicU64,
    /// Index of the head the guard refused; that request and all later ones are refused.
    refused_from: AtomicU64,
    /// Index of the upgrade request the guard holds the following bytes behind.
    waiting_on: AtomicU64,
    decision: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            started: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            refused_from: AtomicU64::new(NONE),
            waiting_on: AtomicU64::new(NONE),
            decision: AtomicU8::new(UNDECIDED),
            waker: Mutex::new(None),
        }
    }
}

impl Gate {
    /// Called by the router as each request starts.
    pub fn start(&self) -> Ticket<'_> {
        let index = self.started.fetch_add(1, Ordering::AcqRel);
        Ticket { gate: self, index, done: false }
    }

    /// No request is being handled: hyper waits for the next head.
    pub(super) fn idle(&self) -> bool {
        self.answered.load(Ordering::Acquire) == self.started.load(Ordering::Acquire)
    }

    pub(super) fn refuse_from(&self, index: u64) {
        self.refused_from.fetch_min(index, Ordering::AcqRel);
    }

    /// The guard holds the bytes after head `index` until the router has answered it.
    pub(super) fn wait_on(&self, index: u64) {
        self.decision.store(UNDECIDED, Ordering::SeqCst);
        self.waiting_on.store(index, Ordering::SeqCst);
    }

    /// The router's decision, or `None` (and `waker` is woken once it is made).
    pub(super) fn poll_decision(&self, waker: &Waker) -> Option<Decision> {
        if let Some(d) = self.decided() {
            return Some(d);
        }
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
        // Decided between the first look and the waker being stored: nobody will wake us.
        self.decided()
    }

    fn decided(&self) -> Option<Decision> {
        match self.decision.load(Ordering::SeqCst) {
            TUNNEL => Some(Decision::Tunnel),
            REFUSED => Some(Decision::Refused),
            _ => None,
        }
    }

    pub(super) fn clear_wait(&self) {
        self.waiting_on.store(NONE, Ordering::SeqCst);
    }
}

/// One request's hold on the gate: records the decision when the response is known, and refused
/// (no tunnel) if dropped before that.
pub struct Ticket<'a> {
    gate: &'a Gate,
    index: u64,
    done: bool,
}

impl Ticket<'_> {
    /// Whether the guard refused this request's head (ambiguous or invalid framing).
    pub fn refused(&self) -> bool {
        self.index >= self.gate.refused_from.load(Ordering::Acquire)
    }

    /// `tunnel`: the response switches the connection to a tunnel (101, or a 2xx to CONNECT).
    pub fn finish(mut self, tunnel: bool) {
        self.decide(tunnel);
    }

    fn decide(&mut self, tunnel: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.gate.answered.fetch_add(1, Ordering::AcqRel);
        if self.gate.waiting_on.load(Ordering::SeqCst) != self.index {
            return;
        }
        self.gate.decision.store(if tunnel { TUNNEL } else { REFUSED }, Ordering::SeqCst);
        if let Some(w) = self.gate.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.decide(false);
    }
}
