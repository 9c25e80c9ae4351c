//! The discovery adapter on mDNS / DNS-SD (`mdns-sd`).
//!
//! We advertise one service instance of type [`SERVICE_TYPE`] named
//! `<short peer id>-<random suffix>`, whose TXT records carry `id` (the full
//! peer id, 64 hex digits), `pv` (the protocol version) and the advert's
//! `meta` entries, and whose SRV port is the port of the advert's addresses.
//! We browse the same type: a resolved instance becomes
//! [`DiscoveryEvent::Up`], a removed one [`DiscoveryEvent::Down`].
//!
//! The mDNS daemon runs on its own thread; every call made to it from here
//! only enqueues a command, and its events arrive on a channel read with
//! `recv_async`, so nothing blocks an async worker.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use lanspread_ports::{Discovery, DiscoveryError, DiscoveryEvent, PeerAdvert, PeerId};
use mdns_sd::{IfKind, Receiver, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The DNS-SD service type of lanspread.
pub const SERVICE_TYPE: &str = "_lanspread._udp.local.";
/// The standard mDNS port.
pub const MDNS_PORT: u16 = 5353;
/// TXT key of the peer id.
pub const TXT_ID: &str = "id";
/// TXT key of the protocol version.
pub const TXT_PROTOCOL_VERSION: &str = "pv";

/// How long `shutdown` waits for the daemon to confirm each step.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Configuration of [`MdnsDiscovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Our own id, if known before [`Discovery::advertise`]: records carrying
    /// it are never reported (the id given to `advertise` is skipped too).
    pub self_id: Option<PeerId>,
    /// Restrict mDNS to these interfaces, each given by name (`"eth0"`) or
    /// by one of its IP addresses (`"192.168.1.4"`). Empty: all interfaces.
    pub interfaces: Vec<String>,
    /// UDP port of mDNS (5353 except in tests).
    pub port: u16,
    /// The DNS-SD service type (tests may isolate themselves with another).
    pub service_type: String,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig { self_id: None, interfaces: Vec::new(), port: MDNS_PORT, service_type: SERVICE_TYPE.to_owned() }
    }
}

/// Peer discovery over mDNS.
pub struct MdnsDiscovery {
    daemon: ServiceDaemon,
    core: Core,
    shutdown: watch::Sender<bool>,
}

/// Everything but the daemon: record building and event mapping.
struct Core {
    service_type: String,
    /// Random per process: distinguishes our successive instances.
    suffix: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    self_id: Option<PeerId>,
    /// Full name of our registered instance.
    registered: Option<String>,
    /// Live instances we reported `Up`, by full name.
    known: HashMap<String, PeerId>,
    events: Option<Receiver<ServiceEvent>>,
}

fn err(what: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError(format!("mdns: {what}: {e}"))
}

impl MdnsDiscovery {
    /// Starts the mDNS daemon and begins browsing for peers.
    pub fn new(config: MdnsConfig) -> Result<Arc<MdnsDiscovery>, DiscoveryError> {
        let daemon = ServiceDaemon::new_with_port(config.port).map_err(|e| err("cannot start the daemon", e))?;
        let setup = || -> Result<Receiver<ServiceEvent>, DiscoveryError> {
            if !config.interfaces.is_empty() {
                let kinds: Vec<IfKind> = config
                    .interfaces
                    .iter()
                    .map(|s| match s.parse::<IpAddr>() {
                        Ok(ip) => IfKind::Addr(ip),
                        Err(_) => IfKind::Name(s.clone()),
                    })
                    .collect();
                daemon.disable_interface(IfKind::All).map_err(|e| err("disable_interface", e))?;
                daemon.enable_interface(kinds).map_err(|e| err("enable_interface", e))?;
            }
            daemon.browse(&config.service_type).map_err(|e| err("browse", e))
        };
        let events = match setup() {
            Ok(ev) => ev,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e);
            }
        };
        let core = Core::new(config.service_type, config.self_id);
        core.lock().events = Some(events);
        Ok(Arc::new(MdnsDiscovery { daemon, core, shutdown: watch::channel(false).0 }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.core.lock()
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

impl Core {
    fn new(service_type: String, self_id: Option<PeerId>) -> Core {
        let suffix = format!("{:08x}", std::collections::hash_map::RandomState::new().build_hasher().finish() as u32);
        Core { service_type, suffix, state: Mutex::new(State { self_id, ..State::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance name we use for `id`.
    fn instance_name(&self, id: &PeerId) -> String {
        format!("{}-{}", id.short(), self.suffix)
    }

    fn service_info(&self, me: &PeerAdvert) -> Result<ServiceInfo, DiscoveryError> {
        let port = me.addrs.first().map(SocketAddr::port).ok_or_else(|| DiscoveryError("mdns: the advert has no address".into()))?;
        if me.addrs.iter().any(|a| a.port() != port) {
            tracing::warn!(?me.addrs, port, "mdns: addresses use several ports; advertising the first one only");
        }
        let mut props: Vec<(String, String)> =
            vec![(TXT_ID.into(), me.id.to_hex()), (TXT_PROTOCOL_VERSION.into(), me.protocol_version.to_string())];
        for (k, v) in &me.meta {
            if k == TXT_ID || k == TXT_PROTOCOL_VERSION {
                return Err(DiscoveryError(format!("mdns: meta key {k:?} is reserved")));
            }
            props.push((k.clone(), v.clone()));
        }
        // Concrete addresses are announced as given; a wildcard bind means
        // "every address of this host", which the daemon tracks itself.
        let wildcard = me.addrs.iter().any(|a| a.ip().is_unspecified());
        let mut ips: Vec<IpAddr> = me.addrs.iter().map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()).collect();
        ips.sort();
        ips.dedup();
        let name = self.instance_name(&me.id);
        let host = format!("{name}.local.");
        let ips: Vec<String> = if wildcard { Vec::new() } else { ips.iter().map(IpAddr::to_string).collect() };
        let info = ServiceInfo::new(&self.service_type, &name, &host, &ips[..], port, &props[..]).map_err(|e| err("invalid advert", e))?;
        Ok(if wildcard { info.enable_addr_auto() } else { info })
    }

    /// Turns a resolved instance into an advert; `None` (with a warning) if
    /// it is malformed.
    fn parse(info: &ResolvedService) -> Option<PeerAdvert> {
        let name = &info.fullname;
        let Some(id) = info.get_property_val_str(TXT_ID).and_then(PeerId::from_hex) else {
            tracing::warn!(%name, "mdns: instance without a valid `id` TXT record; ignored");
            return None;
        };
        let Some(protocol_version) = info.get_property_val_str(TXT_PROTOCOL_VERSION).and_then(|v| v.parse().ok()) else {
            tracing::warn!(%name, "mdns: instance without a valid `pv` TXT record; ignored");
            return None;
        };
        if info.port == 0 || info.addresses.is_empty() {
            tracing::warn!(%name, "mdns: instance without port or address; ignored");
            return None;
        }
        let mut addrs: Vec<SocketAddr> = info.addresses.iter().map(|ip| socket_addr(ip, info.port)).collect();
        addrs.sort();
        addrs.dedup();
        let meta: BTreeMap<String, String> = info
            .txt_properties
            .iter()
            .filter(|p| p.key() != TXT_ID && p.key() != TXT_PROTOCOL_VERSION)
            .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
            .collect();
        Some(PeerAdvert { id, addrs, protocol_version, meta })
    }

    /// Applies one daemon event to our state; the port event, if any.
    fn handle(&self, ev: ServiceEvent) -> Option<DiscoveryEvent> {
        match ev {
            ServiceEvent::ServiceResolved(info) => {
                let advert = Self::parse(&info)?;
                let mut st = self.lock();
                if st.self_id == Some(advert.id) {
                    return None;
                }
                let previous = st.known.insert(info.fullname.clone(), advert.id);
                if let Some(old) = previous.filter(|old| *old != advert.id) {
                    tracing::warn!(name = %info.fullname, %old, new = %advert.id, "mdns: instance changed its peer id");
                }
                Some(DiscoveryEvent::Up(advert))
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let mut st = self.lock();
                let id = st.known.remove(&fullname)?;
                // Another live instance of the same peer (a restart with a
                // new suffix whose old records expire late) keeps it up.
                if st.known.values().any(|other| *other == id) {
                    return None;
                }
                Some(DiscoveryEvent::Down(id))
            }
            _ => None,
        }
    }
}

/// The dialable form of an address record; see [`scoped`].
fn socket_addr(ip: &ScopedIp, port: u16) -> SocketAddr {
    let scope = match ip {
        ScopedIp::V6(v6) => v6.scope_id().index,
        _ => 0,
    };
    scoped(ip.to_ip_addr(), scope, port)
}

/// An IPv6 link-local address keeps `scope`, the index of the interface its
/// record arrived on (without it no dial can leave the host); any other
/// address carries no scope id.
fn scoped(ip: IpAddr, scope: u32, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
        ip => SocketAddr::new(ip, port),
    }
}

#[async_trait]
impl Discovery for MdnsDiscovery {
    async fn advertise(&self, me: PeerAdvert) -> Result<(), DiscoveryError> {
        if self.is_shut_down() {
            return Err(DiscoveryError("mdns: shut down".into()));
        }
        let info = self.core.service_info(&me)?;
        let fullname = info.get_fullname().to_owned();
        let old = {
            let mut st = self.lock();
            st.self_id = Some(me.id);
            st.registered.replace(fullname.clone())
        };
        if let Some(old) = old.filter(|o| !o.eq_ignore_ascii_case(&fullname)) {
            if let Ok(rx) = self.daemon.unregister(&old) {
                let _ = tokio::time::timeout(SHUTDOWN_WAIT, rx.recv_async()).await;
            }
        }
        // Registering an already registered name updates it.
        self.daemon.register(info).map_err(|e| err("register", e))
    }

    async fn next_event(&self) -> Option<DiscoveryEvent> {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                return None;
            }
            let rx = self.lock().events.clone()?;
            tokio::select! {
                ev = rx.recv_async() => match ev {
                    Ok(ev) => {
                        if let Some(out) = self.core.handle(ev) {
                            return Some(out);
                        }
                    }
                    Err(_) => {
                        if self.is_shut_down() {
                            return None;
                        }
                        // The daemon drops a subscriber that falls behind:
                        // subscribe again (peers are re-resolved).
                        tracing::warn!("mdns: browse channel closed; browsing again");
                        let _ = self.daemon.stop_browse(&self.core.service_type);
                        match self.daemon.browse(&self.core.service_type) {
                            Ok(new) => self.lock().events = Some(new),
                            Err(e) => {
                                tracing::warn!(error = %e, "mdns: cannot browse again; discovery ends");
                                self.lock().events = None;
                                return None;
                            }
                        }
                    }
                },
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn shutdown(&self) {
        if self.shutdown.send_replace(true) {
            return;
        }
        let registered = self.lock().registered.take();
        if let Some(name) = registered {
            // Waits for the goodbye packets to be sent.
            if let Ok(rx) = self.daemon.unregister(&name) {
                let _ = tokio::time::timeout(SHUTDOWN_WAIT, rx.recv_async()).await;
            }
        }
        let _ = self.daemon.stop_browse(&self.core.service_type);
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, rx.recv_async()).await;
        }
        self.lock().events = None;
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        if !*self.shutdown.borrow() {
            // Best effort: stop the daemon thread (no goodbye wait here).
            let _ = self.daemon.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(b: u8, addrs: &[&str]) -> PeerAdvert {
        PeerAdvert {
            id: PeerId([b; 32]),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            protocol_version: 3,
            meta: BTreeMap::from([("name".to_owned(), "Alice's PC".to_owned())]),
        }
    }

    #[test]
    fn service_info_carries_the_advert() {
        let core = Core::new(SERVICE_TYPE.into(), None);
        let me = advert(0xab, &["127.0.0.1:4000", "10.1.2.3:4000"]);
        let info = core.service_info(&me).unwrap();
        assert_eq!(info.get_type(), SERVICE_TYPE);
        assert!(info.get_fullname().starts_with(&format!("{}-", me.id.short())));
        assert_eq!(info.get_port(), 4000);
        assert_eq!(info.get_property_val_str("id"), Some(me.id.to_hex().as_str()));
        assert_eq!(info.get_property_val_str("pv"), Some("3"));
        assert_eq!(info.get_property_val_str("name"), Some("Alice's PC"));
        assert_eq!(info.get_addresses().len(), 2);
        assert!(!info.is_addr_auto());

        let info = core.service_info(&advert(1, &["0.0.0.0:4000"])).unwrap();
        assert!(info.is_addr_auto());
        // A dual-stack listener: every address of every interface, v4 and v6.
        let info = core.service_info(&advert(1, &["[::]:4000"])).unwrap();
        assert!(info.is_addr_auto());
        assert_eq!(info.get_port(), 4000);

        let mut bad = advert(1, &["127.0.0.1:1"]);
        bad.meta.insert("id".into(), "x".into());
        assert!(core.service_info(&bad).is_err());
        assert!(core.service_info(&advert(1, &[])).is_err());
    }

    #[test]
    fn link_local_addresses_keep_their_interface_as_scope_id() {
        let ll: std::net::Ipv6Addr = "fe80::64bc:1".parse().unwrap();
        let global: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(scoped(ll.into(), 7, 47800), SocketAddr::V6(SocketAddrV6::new(ll, 47800, 0, 7)));
        assert_eq!(scoped(global.into(), 7, 47800), SocketAddr::V6(SocketAddrV6::new(global, 47800, 0, 0)));
        assert_eq!(scoped("10.77.0.11".parse().unwrap(), 7, 47800), "10.77.0.11:47800".parse().unwrap());
        let v4 = ScopedIp::from(IpAddr::from([10, 77, 0, 11]));
        assert_eq!(socket_addr(&v4, 1), "10.77.0.11:1".parse().unwrap());
    }

    fn resolved(name: &str, id: &str, pv: &str) -> ServiceEvent {
        let info = ServiceInfo::new(SERVICE_TYPE, name, "h.local.", "127.0.0.1", 4000, &[("id", id), ("pv", pv), ("k", "v")][..]).unwrap();
        ServiceEvent::ServiceResolved(Box::new(info.as_resolved_service()))
    }

    fn removed(name: &str) -> ServiceEvent {
        ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), format!("{name}.{SERVICE_TYPE}"))
    }

    #[test]
    fn resolved_and_removed_events_map_to_up_and_down() {
        let core = Core::new(SERVICE_TYPE.into(), Some(PeerId([9; 32])));
        let a = PeerId([1; 32]);
        match core.handle(resolved("a1", &a.to_hex(), "3")) {
            Some(DiscoveryEvent::Up(adv)) => {
                assert_eq!(adv.id, a);
                assert_eq!(adv.addrs, vec!["127.0.0.1:4000".parse().unwrap()]);
                assert_eq!(adv.protocol_version, 3);
                assert_eq!(adv.meta, BTreeMap::from([("k".to_owned(), "v".to_owned())]));
            }
            other => panic!("{other:?}"),
        }
        // Malformed and self records are skipped.
        assert_eq!(core.handle(resolved("bad", "nothex", "3")), None);
        assert_eq!(core.handle(resolved("bad", &a.to_hex(), "x")), None);
        assert_eq!(core.handle(resolved("me", &PeerId([9; 32]).to_hex(), "3")), None);
        // A second instance of `a` keeps it up when the first goes.
        assert!(core.handle(resolved("a2", &a.to_hex(), "3")).is_some());
        assert_eq!(core.handle(removed("a1")), None);
        assert_eq!(core.handle(removed("a2")), Some(DiscoveryEvent::Down(a)));
        assert_eq!(core.handle(removed("unknown")), None);
    }
}
