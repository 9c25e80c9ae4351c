//! The scenario harness: many peers in one process, deterministic from a
//! seed.
//!
//! ```ignore
//! Sim::run("two_peers", 7, |mut sim| async move {
//!     let h = sim.host("seeder", HostConfig::symmetric(10e6, ms(1)));
//!     ...
//! });
//! ```
//!
//! A scenario runs on a current-thread tokio runtime with paused time, so
//! virtual time advances only when every task waits: results (and timings)
//! depend on the seed alone. A failing scenario prints its seed;
//! `LANSPREAD_SIM_SEED=<seed>` replays it exactly.

use crate::clock::SimClock;
use crate::game::SimUnpacker;
use crate::net::{HostConfig, HostId, NetParams, SimNet};
use crate::rng::SimRng;
use lanspread::{EventsError, Peer, PeerCommand, PeerConfig, PeerEvent};
use lanspread_core::catalog::Catalog;
use lanspread_memfs::MemFs;
use lanspread_ports::{Clock, PeerId};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The seed a scenario runs with: `LANSPREAD_SIM_SEED` if set, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("LANSPREAD_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Events a simulated peer buffers for the recorder (which drains them on
/// every turn of the runtime; a full buffer fails the scenario loudly).
const SIM_EVENT_CAPACITY: usize = 8192;

/// A recorded event: virtual time, peer name, event.
pub type Recorded = (Duration, String, PeerEvent);

/// The event trace: every recorded event in order, and where each peer's
/// events are, so reading one peer's events costs only its own.
#[derive(Default)]
struct Log {
    all: Vec<Recorded>,
    by_peer: BTreeMap<String, Vec<usize>>,
}

impl Log {
    fn push(&mut self, r: Recorded) {
        let i = self.all.len();
        match self.by_peer.get_mut(&r.1) {
            Some(v) => v.push(i),
            None => {
                self.by_peer.insert(r.1.clone(), vec![i]);
            }
        }
        self.all.push(r);
    }

    /// Positions (in `all`) of `name`'s events.
    fn of(&self, name: &str) -> &[usize] {
        self.by_peer.get(name).map_or(&[], Vec::as_slice)
    }

    fn events(&self, name: &str) -> Vec<(Duration, PeerEvent)> {
        self.of(name).iter().map(|&i| (self.all[i].0, self.all[i].2.clone())).collect()
    }
}

/// One simulated peer.
pub struct SimPeer {
    /// Name given by the scenario.
    pub name: String,
    /// Its host.
    pub host: HostId,
    /// Its identity (kept across restarts).
    pub id: PeerId,
    /// Its game directory.
    pub fs: MemFs,
    /// Its catalog.
    pub catalog: Catalog,
    /// Its runtime configuration.
    pub config: PeerConfig,
    /// Use the simulated mDNS (else only static peers).
    pub discovery: bool,
    /// Serve from this filesystem instead of `fs` (e.g. a lying one).
    pub fs_override: Option<Arc<dyn lanspread_ports::Fs>>,
    handle: Option<Peer>,
    port: u16,
}

impl SimPeer {
    /// Sends a command to the running peer.
    pub fn send(&self, cmd: PeerCommand) {
        if let Some(h) = &self.handle {
            h.send(cmd);
        }
    }

    /// The running peer's handle, for scenarios that use the typed API
    /// (a clone drives the same peer).
    pub fn handle(&self) -> Option<Peer> {
        self.handle.clone()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }
}

/// A running simulation.
pub struct Sim {
    /// The seed.
    pub seed: u64,
    /// Seeded randomness.
    pub rng: SimRng,
    /// The network.
    pub net: SimNet,
    /// The shared clock.
    pub clock: SimClock,
    peers: BTreeMap<String, SimPeer>,
    log: Arc<Mutex<Log>>,
}

impl Sim {
    /// Runs `scenario` with the seed from [`seed_or`]; on panic, prints the
    /// seed to replay. Returns the full event trace.
    pub fn run<F, Fut>(name: &str, default_seed: u64, scenario: F) -> Vec<Recorded>
    where
        F: FnOnce(Sim) -> Fut,
        Fut: Future<Output = Sim>,
    {
        Self::run_seed(name, seed_or(default_seed), scenario)
    }

    /// Runs with exactly `seed`.
    pub fn run_seed<F, Fut>(name: &str, seed: u64, scenario: F) -> Vec<Recorded>
    where
        F: FnOnce(Sim) -> Fut,
        Fut: Future<Output = Sim>,
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("tokio runtime");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async move {
                let rng = SimRng::new(seed);
                let net = SimNet::new(rng.fork("net"));
                let sim = Sim { seed, rng, net, clock: SimClock::new(), peers: BTreeMap::new(), log: Arc::default() };
                let mut sim = scenario(sim).await;
                let names: Vec<String> = sim.peers.keys().cloned().collect();
                for n in names {
                    sim.stop(&n).await;
                }
                let log = std::mem::take(&mut sim.log.lock().expect("log").all);
                log
            })
        }));
        match result {
            Ok(log) => log,
            Err(panic) => {
                eprintln!("\nsimulation `{name}` failed with seed {seed}\n  replay: LANSPREAD_SIM_SEED={seed} cargo test -p lanspread-testkit {name}\n");
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Replaces the network by one with `params` (e.g. with
    /// [`NetParams::faults`] on), drawn from the same seed. Call it before
    /// adding any host.
    pub fn set_net_params(&mut self, params: NetParams) {
        assert!(self.net.hosts().is_empty(), "set_net_params: the network already has hosts");
        self.net = SimNet::with_params(self.rng.fork("net"), params);
    }

    /// Adds a host to the network.
    pub fn host(&mut self, name: &str, cfg: HostConfig) -> HostId {
        self.net.add_host(name, cfg)
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.clock.now().as_duration()
    }

    /// Default runtime settings for simulations.
    pub fn config(catalog: Catalog) -> PeerConfig {
        PeerConfig { catalog, ..PeerConfig::default() }
    }

    /// Creates (but does not start) a peer on `host`.
    pub fn add_peer(&mut self, name: &str, host: HostId, fs: MemFs, config: PeerConfig) -> &mut SimPeer {
        let id = self.rng.fork(&format!("peer-{name}")).peer_id();
        let catalog = config.catalog.clone();
        let port = 47800;
        self.peers.insert(
            name.to_owned(),
            SimPeer { name: name.to_owned(), host, id, fs, catalog, config, discovery: true, fs_override: None, handle: None, port },
        );
        self.peers.get_mut(name).expect("just inserted")
    }

    /// Starts (or restarts) a peer.
    pub fn start(&mut self, name: &str) {
        let p = self.peers.get_mut(name).unwrap_or_else(|| panic!("no peer {name}"));
        assert!(p.handle.is_none(), "peer {name} already runs");
        let transport = self.net.transport(p.host, p.port, p.id);
        let discovery: Arc<dyn lanspread_ports::Discovery> =
            if p.discovery { self.net.discovery(p.host) } else { Arc::new(crate::fakes::NoDiscovery) };
        let fs: Arc<dyn lanspread_ports::Fs> = match &p.fs_override {
            Some(f) => f.clone(),
            None => Arc::new(p.fs.clone()),
        };
        // Simulated peers are built through the same builder apps use,
        // with the simulation's ports.
        let mut config = p.config.clone();
        config.event_capacity = config.event_capacity.max(SIM_EVENT_CAPACITY);
        let peer = lanspread::Builder::new()
            .custom_fs(fs)
            .fs_provider(None)
            .custom_transport(transport)
            .custom_discovery(discovery)
            .custom_unpacker(Arc::new(SimUnpacker))
            .custom_clock(Arc::new(self.clock))
            .config(move |c| *c = config)
            .assemble()
            .expect("simulated ports always assemble")
            .start();
        let mut events = peer.subscribe();
        p.handle = Some(peer);
        let log = self.log.clone();
        let clock = self.clock;
        let who = name.to_owned();
        let trace = std::env::var_os("LANSPREAD_SIM_TRACE").is_some();
        tokio::spawn(async move {
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(EventsError::Lagged { missed }) => panic!("the recorder of {who} fell {missed} events behind"),
                    Err(EventsError::Closed) => break,
                };
                if trace {
                    eprintln!("{:>12?} {who} {e:?}", clock.now().as_duration());
                }
                log.lock().expect("log").push((clock.now().as_duration(), who.clone(), e));
            }
        });
    }

    /// Adds and starts a peer.
    pub fn spawn(&mut self, name: &str, host: HostId, fs: MemFs, config: PeerConfig) {
        self.add_peer(name, host, fs, config);
        self.start(name);
    }

    /// Shuts a peer down cleanly.
    pub async fn stop(&mut self, name: &str) {
        if let Some(h) = self.peers.get_mut(name).and_then(|p| p.handle.take()) {
            h.shutdown().await;
        }
    }

    /// Crashes a peer: its tasks stop at once, its connections drop, and its
    /// filesystem keeps only what survives a crash under `model`.
    pub fn crash(&mut self, name: &str, model: lanspread_memfs::CrashModel) {
        let p = self.peers.get_mut(name).unwrap_or_else(|| panic!("no peer {name}"));
        if let Some(h) = p.handle.take() {
            h.kill();
        }
        self.net.crash(p.host);
        p.fs = p.fs.crash(model);
    }

    /// Brings a crashed peer's host back and restarts the peer.
    pub fn restart(&mut self, name: &str) {
        let host = self.peers[name].host;
        self.net.restart(host);
        self.start(name);
    }

    /// A peer.
    pub fn peer(&self, name: &str) -> &SimPeer {
        self.peers.get(name).unwrap_or_else(|| panic!("no peer {name}"))
    }

    /// A peer, mutably.
    pub fn peer_mut(&mut self, name: &str) -> &mut SimPeer {
        self.peers.get_mut(name).unwrap_or_else(|| panic!("no peer {name}"))
    }

    /// Sends a command to a peer.
    pub fn send(&self, name: &str, cmd: PeerCommand) {
        self.peer(name).send(cmd);
    }

    /// Every recorded event so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.log.lock().expect("log").all.clone()
    }

    /// Events of one peer so far.
    pub fn events(&self, name: &str) -> Vec<(Duration, PeerEvent)> {
        self.log.lock().expect("log").events(name)
    }

    /// The address a peer listens on.
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        let p = self.peer(name);
        std::net::SocketAddr::new(self.net.host_addr(p.host), p.port)
    }

    /// Gives a peer a new identity (as if it was reinstalled with a new key).
    pub fn rekey(&mut self, name: &str) {
        let id = self.rng.fork(&format!("rekey-{name}-{}", self.now().as_nanos())).peer_id();
        self.peer_mut(name).id = id;
    }

    /// Lets virtual time pass.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Waits (in virtual time, polling every 10 ms) until `name` has
    /// emitted an event matching `pred` (the first such event in its whole
    /// log, so one already emitted is found at once); panics after
    /// `timeout`. Each poll looks only at the events emitted since the last.
    pub async fn wait_for(&self, name: &str, timeout: Duration, pred: impl Fn(&PeerEvent) -> bool) -> (Duration, PeerEvent) {
        let deadline = self.now() + timeout;
        let mut checked = 0;
        loop {
            // Copied out of the lock: `pred` may look at the simulation.
            let fresh: Vec<(Duration, PeerEvent)> = {
                let log = self.log.lock().expect("log");
                let mine = log.of(name);
                let fresh = mine[checked..].iter().map(|&i| (log.all[i].0, log.all[i].2.clone())).collect();
                checked = mine.len();
                fresh
            };
            if let Some(found) = fresh.into_iter().find(|(_, e)| pred(e)) {
                return found;
            }
            if self.now() >= deadline {
                let recent: Vec<String> = self.events(name).iter().rev().take(12).rev().map(|(t, e)| format!("  {t:?} {e:?}")).collect();
                panic!("peer {name}: no matching event within {timeout:?} (at {:?}); its last events:\n{}", self.now(), recent.join("\n"));
            }
            tokio::time::sleep(ms(10)).await;
        }
    }

    /// Waits until `cond` holds (polling every 10 ms of virtual time).
    pub async fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Sim) -> bool) {
        let deadline = self.now() + timeout;
        while !cond(self) {
            assert!(self.now() < deadline, "{what}: not reached within {timeout:?}");
            tokio::time::sleep(ms(10)).await;
        }
    }

    /// The last peer count a peer reported.
    pub fn peer_count(&self, name: &str) -> Option<usize> {
        self.events(name).into_iter().rev().find_map(|(_, e)| match e {
            PeerEvent::PeerCount(n) => Some(n),
            _ => None,
        })
    }
}

/// Renders a trace for determinism comparisons.
pub fn render(log: &[Recorded]) -> Vec<String> {
    log.iter().map(|(t, n, e)| format!("{:>12?} {n} {e:?}", t)).collect()
}
