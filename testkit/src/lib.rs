//! Deterministic many-peer simulation for lanspread: a simulated network
//! (`net`), clock (`clock`) and random source (`rng`), simulated games
//! (`game`), and the scenario harness (`sim`).
#![forbid(unsafe_code)]

pub mod clock;
pub mod contract;
pub mod fakes;
pub mod game;
pub mod net;
pub mod rng;
pub mod sim;
pub mod swarm;

pub use game::{SimGame, SimUnpacker};
pub use net::{HostConfig, HostId, SimNet};
pub use rng::SimRng;
pub use sim::{ms, render, Sim};
