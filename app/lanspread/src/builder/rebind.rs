//! Switching identities with the game directory, for a QUIC transport
//! built by the builder: the old endpoint stops, and a new one listens at
//! the same address as the new directory's identity, with discovery that
//! advertises it.

use super::{check_game_dir, identity_dir_for, load_identity_dir, make_transport, mdns, DiscoveryKind, TransportKind};
use crate::runtime::{Network, NoDiscovery, Rebind, RebindFailed};
use lanspread_core::peer::SetGameDirError;
use lanspread_ports::{Discovery, PeerId};
use lanspread_tls::Identity;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a new endpoint waits for the old one's socket to be released.
const REBIND_PATIENCE: Duration = Duration::from_secs(3);
const REBIND_RETRY: Duration = Duration::from_millis(50);

/// See the module docs.
pub(super) struct QuicRebind {
    kind: TransportKind,
    root: PathBuf,
    /// Discovery to start again for the new identity; `None`: the app's
    /// own discovery, kept as it is.
    rediscover: Option<DiscoveryKind>,
    /// The identity in use, to listen as again if the new one cannot.
    current: Mutex<Identity>,
}

impl QuicRebind {
    pub fn new(kind: TransportKind, root: PathBuf, rediscover: Option<DiscoveryKind>, current: Identity) -> Self {
        QuicRebind { kind, root, rediscover, current: Mutex::new(current) }
    }

    fn identity_of(&self, dir: &str) -> Result<Identity, SetGameDirError> {
        let fail = |e: &dyn std::fmt::Display| SetGameDirError::Identity { dir: dir.to_owned(), reason: e.to_string() };
        let canonical = check_game_dir(std::path::Path::new(dir)).map_err(|e| fail(&e))?;
        load_identity_dir(identity_dir_for(&self.root, &canonical)).map_err(|e| fail(&e))
    }

    /// Listens at `addr` as `identity`, retrying while the old endpoint's
    /// socket is still being released.
    async fn listen(&self, addr: SocketAddr, identity: &Identity, old_discovery: &Arc<dyn Discovery>) -> Result<Network, String> {
        let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
        let transport = loop {
            match make_transport(self.kind, addr, identity) {
                Ok(t) => break t,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => tokio::time::sleep(REBIND_RETRY).await,
            }
        };
        let discovery = match self.rediscover {
            None => old_discovery.clone(),
            Some(DiscoveryKind::None) => Arc::new(NoDiscovery),
            Some(DiscoveryKind::Mdns) => match mdns(transport.as_ref()) {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!("mDNS unavailable for the new identity ({e}); only static peer addresses will be used");
                    Arc::new(NoDiscovery)
                }
                Err(e) => return Err(e.to_string()),
            },
        };
        Ok(Network { transport, discovery })
    }
}

#[async_trait::async_trait]
impl Rebind for QuicRebind {
    fn id_for(&self, dir: &str) -> Result<PeerId, SetGameDirError> {
        Ok(self.identity_of(dir)?.peer_id())
    }

    async fn rebind(&self, dir: &str, old: Network) -> Result<Network, RebindFailed> {
        let identity = self.identity_of(dir).map_err(|error| RebindFailed { error, restored: Some(old.clone()) })?;
        let Network { transport, discovery } = old;
        let addr = transport.local_addr();
        if self.rediscover.is_some() {
            discovery.shutdown().await;
        }
        transport.shutdown().await;
        // The socket is released once the last handle is gone.
        drop(transport);
        match self.listen(addr, &identity, &discovery).await {
            Ok(net) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = identity;
                Ok(net)
            }
            Err(reason) => {
                let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let restored = self.listen(addr, &current, &discovery).await.ok();
                Err(RebindFailed { error: SetGameDirError::Identity { dir: dir.to_owned(), reason }, restored })
            }
        }
    }
}
