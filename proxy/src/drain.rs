//! Drain signal: every connection and accept loop holds a `Drain`; the trigger fires it, then waits
//! until every holder has let go (or the deadline passes).
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Drain(watch::Receiver<bool>);

pub struct DrainTrigger(watch::Sender<bool>);

pub fn channel() -> (DrainTrigger, Drain) {
    let (tx, rx) = watch::channel(false);
    (DrainTrigger(tx), Drain(rx))
}

impl Drain {
    pub async fn signaled(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}

impl DrainTrigger {
    /// Signals drain and waits for every holder to finish; returns false on timeout.
    pub async fn drain(self, deadline: Duration) -> bool {
        let _ = self.0.send(true);
        tokio::time::timeout(deadline, self.0.closed()).await.is_ok()
    }

    pub fn signal(&self) {
        let _ = self.0.send(true);
    }
}
