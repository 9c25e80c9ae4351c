//! The LAN party key as a password-authenticated key exchange.
//!
//! Both sides run symmetric SPAKE2 (Ed25519) with the party words as the
//! password and the connection's TLS exporter as the identity, so the
//! exchange is bound to this TLS session: a relay, which terminates two
//! sessions with different exporters, ends up with two different keys.
//! Neither side's message reveals anything that allows an offline guess of
//! the words: each exchange tests one guess, online, and the server limits
//! how many a host may try. The server confirms the key first (a MAC under
//! it in its Hello); the client checks that before it confirms in turn
//! (`Request::Confirm`), so a server that only advertised itself learns
//! nothing from a client either.

use lanspread_ports::{Connection, PeerId};
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Exporter label binding the exchange to one TLS session.
const EXPORTER_LABEL: &[u8] = lanspread_ports::transport::SESSION_EXPORTER_LABEL;

/// Which side confirms.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"client",
            Role::Server => b"server",
        }
    }
}

/// The words of a LAN party.
#[derive(Clone)]
pub(crate) struct PartyKey(String);

impl std::fmt::Debug for PartyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartyKey(..)")
    }
}

/// One side's half of an exchange, and the message to send.
pub(crate) struct Exchange {
    state: Spake2<Ed25519Group>,
    /// Our SPAKE2 message.
    pub message: Vec<u8>,
}

/// The key both sides derived (equal iff they used the same words on the
/// same TLS session).
pub(crate) struct SessionKey([u8; 32]);

impl PartyKey {
    pub fn new(words: &str) -> Self {
        PartyKey(words.trim().to_owned())
    }

    /// Starts an exchange bound to `conn`'s TLS session (`None` if the
    /// transport cannot export keying material).
    pub fn start(&self, conn: &dyn Connection) -> Option<Exchange> {
        let exporter = conn.export_keying_material(EXPORTER_LABEL).ok()?;
        Some(self.start_bound(&exporter))
    }

    fn start_bound(&self, session: &[u8]) -> Exchange {
        let (state, message) = Spake2::<Ed25519Group>::start_symmetric(&Password::new(self.0.as_bytes()), &Identity::new(session));
        Exchange { state, message }
    }
}

impl Exchange {
    /// Finishes with the other side's message (`None` if it is malformed).
    pub fn finish(self, theirs: &[u8]) -> Option<SessionKey> {
        let key = self.state.finish(theirs).ok()?;
        Some(SessionKey(blake3::derive_key("lanspread party key v3 confirmation", &key)))
    }
}

impl SessionKey {
    /// The confirmation `role` sends on the connection from `client` to
    /// `server`.
    pub fn proof(&self, role: Role, client: &PeerId, server: &PeerId) -> [u8; 32] {
        let mut mac = blake3::Hasher::new_keyed(&self.0);
        mac.update(role.label());
        mac.update(&client.0);
        mac.update(&server.0);
        *mac.finalize().as_bytes()
    }

    /// Whether `proof` is `role`'s confirmation (constant time).
    pub fn verify(&self, role: Role, proof: &[u8; 32], client: &PeerId, server: &PeerId) -> bool {
        same_proof(proof, &self.proof(role, client, server))
    }
}

/// Constant-time comparison of two confirmations.
pub(crate) fn same_proof(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: PeerId = PeerId([1; 32]);
    const S: PeerId = PeerId([2; 32]);

    fn exchange(client_words: &str, server_words: &str, client_session: &[u8], server_session: &[u8]) -> (SessionKey, SessionKey) {
        let client = PartyKey::new(client_words).start_bound(client_session);
        let server = PartyKey::new(server_words).start_bound(server_session);
        let (to_server, to_client) = (client.message.clone(), server.message.clone());
        (client.finish(&to_client).unwrap(), server.finish(&to_server).unwrap())
    }

    #[test]
    fn the_same_words_on_one_session_confirm_both_ways() {
        let (c, s) = exchange("lan party 2026", " lan party 2026 ", b"session", b"session");
        assert!(c.verify(Role::Server, &s.proof(Role::Server, &C, &S), &C, &S));
        assert!(s.verify(Role::Client, &c.proof(Role::Client, &C, &S), &C, &S));
        // A confirmation is not valid for the other role or other peers.
        assert!(!c.verify(Role::Client, &s.proof(Role::Server, &C, &S), &C, &S));
        assert!(!c.verify(Role::Server, &s.proof(Role::Server, &S, &C), &C, &S));
    }

    #[test]
    fn other_words_or_another_session_confirm_nothing() {
        let (c, s) = exchange("lan party 2026", "another party", b"session", b"session");
        assert!(!c.verify(Role::Server, &s.proof(Role::Server, &C, &S), &C, &S), "wrong words");
        // A relay: two TLS sessions, two exporters.
        let (c, s) = exchange("lan party 2026", "lan party 2026", b"leg one", b"leg two");
        assert!(!s.verify(Role::Client, &c.proof(Role::Client, &C, &S), &C, &S), "relayed");
    }

    #[test]
    fn messages_do_not_repeat_and_garbage_is_refused() {
        let key = PartyKey::new("lan party 2026");
        let (a, b) = (key.start_bound(b"s"), key.start_bound(b"s"));
        // Fresh randomness per exchange: a captured message is no
        // password-derived constant to attack offline.
        assert_ne!(a.message, b.message);
        assert!(a.finish(b"short").is_none());
    }
}
