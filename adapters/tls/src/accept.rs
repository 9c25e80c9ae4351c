//! The accept side both QUIC adapters share. Each adapter's accept loop
//! completes handshakes and pushes the authenticated connections into a
//! bounded queue; [`AcceptQueue::accept`] hands them to the runtime one at a
//! time; shutdown wakes every waiting `accept` and returns what nobody took,
//! so the adapter can close it.

use tokio::sync::{mpsc, watch, Mutex};

/// Handshaken connections waiting for `Transport::accept`, and the
/// transport's shutdown flag.
#[derive(Debug)]
pub struct AcceptQueue<C> {
    incoming: Mutex<mpsc::Receiver<C>>,
    shutdown: watch::Sender<bool>,
}

impl<C: Send> AcceptQueue<C> {
    /// A queue holding at most `capacity` connections, and the sender the
    /// accept loop fills (a full queue makes the loop wait: back-pressure).
    pub fn new(capacity: usize) -> (Self, mpsc::Sender<C>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (shutdown, _) = watch::channel(false);
        (AcceptQueue { incoming: Mutex::new(rx), shutdown }, tx)
    }

    /// A receiver that turns `true` at shutdown (for the accept loop).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether [`AcceptQueue::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The next connection, or `None` once the transport is shut down.
    pub async fn accept(&self) -> Option<C> {
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow() {
            return None;
        }
        let mut incoming = tokio::select! {
            guard = self.incoming.lock() => guard,
            _ = shutdown.wait_for(|s| *s) => return None,
        };
        tokio::select! {
            conn = incoming.recv() => conn,
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

    /// Marks the transport shut down: every `accept` returns `None` from now
    /// on, and the accept loop sees its signal.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Closes the queue and returns the connections that were accepted but
    /// never handed out.
    pub async fn drain(&self) -> Vec<C> {
        let mut incoming = self.incoming.lock().await;
        incoming.close();
        let mut left = Vec::new();
        while let Ok(c) = incoming.try_recv() {
            left.push(c);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn hands_out_in_order_then_wakes_waiters_and_returns_the_rest_at_shutdown() {
        let (q, tx) = AcceptQueue::new(4);
        let q = Arc::new(q);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(q.accept().await, Some(1));
        assert_eq!(q.accept().await, Some(2));
        // A waiter blocked on an empty queue wakes at shutdown.
        let waiter = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.accept().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(3).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Some(3));
        let waiter = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.accept().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut signal = q.shutdown_signal();
        q.shut_down();
        assert!(q.is_shut_down());
        assert_eq!(waiter.await.unwrap(), None);
        assert!(*signal.borrow_and_update());
        // Connections queued at shutdown are never handed out, but returned.
        tx.send(4).await.unwrap();
        assert_eq!(q.accept().await, None);
        assert_eq!(q.drain().await, vec![4]);
        assert!(tx.send(5).await.is_err(), "the queue is closed");
    }
}
