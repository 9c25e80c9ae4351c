//! Shared TLS material for the QUIC transport adapters.
//!
//! - [`Identity`]: a self-signed ECDSA P-256 certificate and its key; the
//!   peer's identity ([`PeerId`]) is the SHA-256 of the certificate DER.
//! - [`server_config`] / [`ClientTls`]: rustls 0.23 configurations (ring
//!   provider, TLS 1.3 only, ALPN [`ALPN`]) in which both sides present their
//!   certificate. Any self-signed certificate is accepted, but the handshake
//!   signatures are verified, so the remote proves possession of the key of
//!   the certificate whose fingerprint becomes its `PeerId`. A client dial
//!   may pin the expected `PeerId`; the verifier then rejects any other
//!   certificate during the handshake.
//! - [`TransportLimits`]: the knobs both adapters apply.
//! - [`AcceptQueue`]: the queue of handshaken incoming connections and the
//!   shutdown flag, the same in both adapters.
//! - [`addr`]: how both adapters spell addresses (dual stack, scopes).

#![forbid(unsafe_code)]

mod accept;
pub mod addr;
pub use accept::AcceptQueue;

use lanspread_ports::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one ALPN protocol both adapters speak.
pub const ALPN: &[u8] = b"lanspread/1";

/// The TLS exporter label every adapter supports by default (see
/// [`TransportLimits::exporter_labels`]).
pub const EXPORTER_LABEL: &[u8] = lanspread_ports::transport::SESSION_EXPORTER_LABEL;

/// Application error code with which the adapters reset a send stream
/// that is dropped without `finish` or `reset` (so the reader sees an error,
/// not a clean but truncated end).
pub const STREAM_DROPPED_CODE: u32 = 0;

/// Length of every exported keying material value.
pub const EXPORTER_LEN: usize = 32;

/// The DNS suffix of the synthetic server names used for dials.
const DIAL_SUFFIX: &str = "lanspread";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Key or certificate generation failed.
    #[error("generating identity: {0}")]
    Generate(String),
    /// Reading or writing the identity files failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// File or directory involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stored identity is unusable (bad encoding, key does not match).
    #[error("invalid identity: {0}")]
    InvalidIdentity(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Bounds and tuning shared by the QUIC adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportLimits {
    /// Concurrent bidirectional streams the remote may open per connection.
    pub max_concurrent_bidi_streams: u32,
    /// Per-stream receive window (bytes).
    pub stream_receive_window: u32,
    /// Per-connection receive window (bytes).
    pub connection_receive_window: u32,
    /// Unacknowledged bytes buffered for sending: per connection in quinn;
    /// s2n's buffer is per stream and is capped at `stream_receive_window`.
    pub send_window: u32,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive ping period (must be below `idle_timeout`).
    pub keep_alive: Duration,
    /// Largest IP-level MTU the adapters probe for (path MTU discovery).
    /// 9000 lets loopback and jumbo-frame LANs use big datagrams; paths
    /// that cannot carry them fall back to what works. (quinn caps its own
    /// datagrams at 6500 bytes, see the quinn adapter, but accepts 9000.)
    pub max_mtu: u16,
    /// Labels for which `export_keying_material` is available. The s2n
    /// adapter can only compute exporter values during the handshake, so
    /// both adapters accept exactly these labels and refuse others.
    pub exporter_labels: Vec<Vec<u8>>,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_concurrent_bidi_streams: 64,
            stream_receive_window: 16 * 1024 * 1024,
            connection_receive_window: 64 * 1024 * 1024,
            send_window: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_mtu: 9000,
            exporter_labels: vec![EXPORTER_LABEL.to_vec()],
        }
    }
}

impl TransportLimits {
    /// Whether `label` is one of [`Self::exporter_labels`].
    pub fn exporter_label_allowed(&self, label: &[u8]) -> bool {
        self.exporter_labels.iter().any(|l| l == label)
    }
}

/// This node's TLS identity: a self-signed certificate and its private key
/// (PKCS#8 DER).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id()).finish_non_exhaustive()
    }
}

const CERT_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";

impl Identity {
    /// A fresh self-signed ECDSA P-256 identity.
    pub fn generate() -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![DIAL_SUFFIX.to_string()]).map_err(|e| TlsError::Generate(e.to_string()))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "lanspread peer");
        let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Identity { cert_der: cert.der().to_vec(), key_der: key.serialize_der() })
    }

    /// Loads `cert.der` and `key.der` from `dir`, or creates them (key file
    /// mode 0600) if neither exists. Fails if only one exists or the pair is
    /// unusable, rather than silently replacing the node's identity.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let io_err = |p: &Path| {
            let path = p.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_der = fs::read(&cert_path).map_err(io_err(&cert_path))?;
                let key_der = fs::read(&key_path).map_err(io_err(&key_path))?;
                let id = Identity { cert_der, key_der };
                id.validate()?;
                Ok(id)
            }
            (false, false) => {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
                let id = Identity::generate()?;
                write_file(&key_path, &id.key_der, true).map_err(io_err(&key_path))?;
                write_file(&cert_path, &id.cert_der, false).map_err(io_err(&cert_path))?;
                Ok(id)
            }
            (true, false) => {
                Err(TlsError::InvalidIdentity(format!("{} exists but {} is missing", cert_path.display(), key_path.display())))
            }
            (false, true) => {
                Err(TlsError::InvalidIdentity(format!("{} exists but {} is missing", key_path.display(), cert_path.display())))
            }
        }
    }

    /// Our identity as peers see it: SHA-256 of the certificate DER.
    pub fn peer_id(&self) -> PeerId {
        peer_id_of(&self.cert_der)
    }

    /// The certificate as a rustls type.
    pub fn certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    /// The private key as a rustls type.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Checks that the certificate parses and the key is a supported key
    /// matching the certificate.
    pub fn validate(&self) -> Result<(), TlsError> {
        let cert = self.certificate();
        ParsedCertificate::try_from(&cert).map_err(|e| TlsError::InvalidIdentity(format!("certificate: {e}")))?;
        let key = provider()
            .key_provider
            .load_private_key(self.private_key())
            .map_err(|e| TlsError::InvalidIdentity(format!("private key: {e}")))?;
        rustls::sign::CertifiedKey::new(vec![cert], key)
            .keys_match()
            .map_err(|e| TlsError::InvalidIdentity(format!("key/certificate: {e}")))
    }
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if secret {
            opts.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// SHA-256 of a certificate DER.
pub fn peer_id_of(cert_der: &[u8]) -> PeerId {
    PeerId(Sha256::digest(cert_der).into())
}

/// The `PeerId` of a presented chain: the fingerprint of its end-entity
/// (first) certificate; `None` for an empty chain.
pub fn peer_id_from_certs(certs: &[CertificateDer<'_>]) -> Option<PeerId> {
    certs.first().map(|c| peer_id_of(c.as_ref()))
}

/// The rustls crypto provider both adapters use: ring, TLS 1.3 suites only
/// (AES-128-GCM first; it is also QUIC's Initial suite).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

fn verify_tls13(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
}

fn parse_end_entity(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    ParsedCertificate::try_from(end_entity).map(|_| ())
}

/// Accepts any client certificate that parses; rustls then checks the
/// client's CertificateVerify signature with [`ClientCertVerifier::verify_tls13_signature`].
#[derive(Debug)]
struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        parse_end_entity(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server configuration: our certificate, mandatory client certificate
/// (any self-signed one), TLS 1.3 only, ALPN [`ALPN`], no resumption.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert { algs: provider.signature_verification_algorithms });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.certificate()], identity.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.max_fragment_size = None;
    Ok(Arc::new(config))
}

/// What the server verifier knows about one dial.
#[derive(Debug, Clone, Copy, Default)]
struct DialState {
    expected: Option<PeerId>,
    presented: Option<PeerId>,
}

type DialTable = Arc<Mutex<HashMap<String, DialState>>>;

/// Accepts any server certificate that parses, records its fingerprint for
/// the dial (identified by the server name), and rejects it if the dial
/// pinned another `PeerId`.
#[derive(Debug)]
struct PinningServerVerifier {
    algs: WebPkiSupportedAlgorithms,
    dials: DialTable,
}

impl ServerCertVerifier for PinningServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        parse_end_entity(end_entity)?;
        let got = peer_id_of(end_entity.as_ref());
        let name = server_name.to_str();
        let mut dials = self.dials.lock().map_err(|_| rustls::Error::General("dial table poisoned".into()))?;
        let Some(state) = dials.get_mut(name.as_ref()) else {
            // Not one of our live dials (e.g. the dial was abandoned).
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        };
        state.presented = Some(got);
        match state.expected {
            Some(expected) if expected != got => Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client-side TLS for one endpoint: a single rustls [`ClientConfig`] whose
/// verifier pins per dial. Each dial gets a unique synthetic server name
/// (`d<n>.lanspread`, SNI is not sent); the verifier looks the expectation
/// up by that name and records the fingerprint the server presented.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    dials: DialTable,
    next: Arc<AtomicU64>,
}

impl ClientTls {
    /// Client configuration presenting `identity`; TLS 1.3 only, ALPN
    /// [`ALPN`], no resumption (so the verifier runs on every handshake).
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        let provider = provider();
        let dials = DialTable::default();
        let verifier = Arc::new(PinningServerVerifier { algs: provider.signature_verification_algorithms, dials: Arc::clone(&dials) });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![identity.certificate()], identity.private_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = false;
        config.enable_early_data = false;
        config.max_fragment_size = None;
        Ok(ClientTls { config: Arc::new(config), dials, next: Arc::new(AtomicU64::new(0)) })
    }

    /// The rustls configuration (shared by all dials).
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Registers one dial. Pass [`Dial::server_name`] as the server name of
    /// the connection attempt; keep the `Dial` alive until the handshake has
    /// finished (dropping it unregisters the name, and a handshake for an
    /// unregistered name is rejected).
    pub fn dial(&self, expected: Option<PeerId>) -> Dial {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let server_name = format!("d{n:x}.{DIAL_SUFFIX}");
        if let Ok(mut dials) = self.dials.lock() {
            dials.insert(server_name.clone(), DialState { expected, presented: None });
        }
        Dial { server_name, expected, dials: Arc::clone(&self.dials) }
    }
}

/// One registered dial (see [`ClientTls::dial`]).
#[derive(Debug)]
pub struct Dial {
    server_name: String,
    expected: Option<PeerId>,
    dials: DialTable,
}

impl Dial {
    /// The synthetic server name to dial with.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The pinned identity, if any.
    pub fn expected(&self) -> Option<PeerId> {
        self.expected
    }

    /// The identity the server presented, once the verifier has run.
    pub fn presented(&self) -> Option<PeerId> {
        self.dials.lock().ok().and_then(|d| d.get(&self.server_name).and_then(|s| s.presented))
    }

    /// `Some((expected, got))` if the server presented an identity other
    /// than the pinned one.
    pub fn mismatch(&self) -> Option<(PeerId, PeerId)> {
        match (self.expected, self.presented()) {
            (Some(e), Some(g)) if e != g => Some((e, g)),
            _ => None,
        }
    }
}

impl Drop for Dial {
    fn drop(&mut self) {
        if let Ok(mut dials) = self.dials.lock() {
            dials.remove(&self.server_name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_valid_and_ids_differ() {
        let a = Identity::generate().expect("generate");
        let b = Identity::generate().expect("generate");
        a.validate().expect("valid");
        assert_ne!(a.peer_id(), b.peer_id());
        assert_eq!(a.peer_id(), peer_id_of(&a.cert_der));
        assert_eq!(peer_id_from_certs(&[a.certificate(), b.certificate()]), Some(a.peer_id()));
        assert_eq!(peer_id_from_certs(&[]), None);
    }

    #[test]
    fn load_or_create_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("id");
        let a = Identity::load_or_create(&sub).expect("create");
        let b = Identity::load_or_create(&sub).expect("load");
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(sub.join(KEY_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_file(sub.join(KEY_FILE)).expect("rm");
        assert!(matches!(Identity::load_or_create(&sub), Err(TlsError::InvalidIdentity(_))));
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let a = Identity::generate().expect("generate");
        let b = Identity::generate().expect("generate");
        let bad = Identity { cert_der: a.cert_der, key_der: b.key_der };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn configs_build() {
        let id = Identity::generate().expect("generate");
        let server = server_config(&id).expect("server");
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        let client = ClientTls::new(&id).expect("client");
        let d1 = client.dial(None);
        let d2 = client.dial(Some(id.peer_id()));
        assert_ne!(d1.server_name(), d2.server_name());
        assert!(ServerName::try_from(d1.server_name().to_string()).is_ok());
        assert_eq!(d2.presented(), None);
        assert_eq!(d2.mismatch(), None);
    }

    /// Full in-memory TLS 1.3 handshakes (no QUIC) through both verifiers.
    fn handshake(
        server_id: &Identity,
        client_id: &Identity,
        expected: Option<PeerId>,
    ) -> (Result<(), rustls::Error>, Dial, Option<PeerId>, Option<PeerId>) {
        let server_cfg = server_config(server_id).expect("server config");
        let client_tls = ClientTls::new(client_id).expect("client tls");
        let dial = client_tls.dial(expected);
        let name = ServerName::try_from(dial.server_name().to_string()).expect("name");
        let mut client = rustls::ClientConnection::new(client_tls.config(), name).expect("client conn");
        let mut server = rustls::ServerConnection::new(server_cfg).expect("server conn");
        let mut result = Ok(());
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).expect("write");
            }
            if !buf.is_empty() {
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).expect("read");
                }
                if let Err(e) = server.process_new_packets() {
                    result = Err(e);
                    break;
                }
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).expect("write");
            }
            if !buf.is_empty() {
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd).expect("read");
                }
                if let Err(e) = client.process_new_packets() {
                    result = Err(e);
                    break;
                }
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        let seen_by_client = client.peer_certificates().and_then(peer_id_from_certs);
        let seen_by_server = server.peer_certificates().and_then(peer_id_from_certs);
        (result, dial, seen_by_client, seen_by_server)
    }

    #[test]
    fn mutual_auth_records_identities() {
        let s = Identity::generate().expect("generate");
        let c = Identity::generate().expect("generate");
        let (res, dial, by_client, by_server) = handshake(&s, &c, Some(s.peer_id()));
        res.expect("handshake");
        assert_eq!(dial.presented(), Some(s.peer_id()));
        assert_eq!(by_client, Some(s.peer_id()));
        assert_eq!(by_server, Some(c.peer_id()));
    }

    #[test]
    fn pinned_mismatch_rejected() {
        let s = Identity::generate().expect("generate");
        let c = Identity::generate().expect("generate");
        let other = Identity::generate().expect("generate").peer_id();
        let (res, dial, _, _) = handshake(&s, &c, Some(other));
        assert!(res.is_err());
        assert_eq!(dial.mismatch(), Some((other, s.peer_id())));
    }
}
