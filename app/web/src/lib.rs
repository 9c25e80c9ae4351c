//! The HTTP control API of lanspread, and the page that uses it.
//!
//! [`router`] answers the routes of `API.md` (beside this crate) for one
//! running [`lanspread::Peer`], using only the library's public API and
//! [`lanspread::bridge`] for every name and shape; [`serve`] runs it on a
//! listener until a shutdown signal. Every request must carry the
//! [`Token`], name this UI in its `Host`, and (for a state change) be a
//! same-origin JSON request of at most 16 KiB.
//!
//! ```no_run
//! # async fn run(peer: lanspread::Peer) -> Result<(), Box<dyn std::error::Error>> {
//! use lanspread_web::{router, serve, Token, UiConfig};
//! let token = Token::load_or_create("/home/me/.config/lanspread/ui-token".as_ref())?;
//! let cfg = UiConfig::new(token, "127.0.0.1:7878".parse()?);
//! println!("open {}", cfg.url());
//! let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
//! serve(listener, router(peer.clone(), cfg), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! peer.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod assets;
mod error;
mod events;
mod guard;
mod token;

pub use api::{RouteDoc, ROUTES};
pub use error::ApiError;
pub use events::{KEEP_ALIVE, LIVE, PROGRESS_PERIOD, RING};
pub use guard::{BODY_LIMIT, COOKIE_NAME};
pub use token::{Token, TokenError};

use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::{middleware, Extension, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;

/// The page may load its own script, style and images only, talk to this
/// server only, and be framed by nobody.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How the UI is reached and opened.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// The secret every request must carry.
    pub token: Token,
    /// Where the UI listens (its port decides the allowed `Host`s).
    pub listen: SocketAddr,
    /// More `Host` values to answer to, as `name:port` (`--ui-public`).
    pub extra_hosts: Vec<String>,
}

impl UiConfig {
    /// A UI on `listen` opened with `token`.
    pub fn new(token: Token, listen: SocketAddr) -> Self {
        UiConfig { token, listen, extra_hosts: Vec::new() }
    }

    /// The URL to open: it logs the browser in (and sends it on to `/`).
    /// A UI listening on every address is opened through loopback.
    pub fn url(&self) -> String {
        let ip = self.listen.ip();
        let host = match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => format!("127.0.0.1:{}", self.listen.port()),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => format!("[::1]:{}", self.listen.port()),
            _ => self.listen.to_string(),
        };
        format!("http://{host}/?token={}", self.token.to_hex())
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    peer: lanspread::Peer,
    hub: events::Hub,
}

impl AppState {
    fn games(&self) -> Vec<lanspread::bridge::GameJson> {
        let progress = self.hub.progress();
        lanspread::bridge::games_json(&self.peer.snapshot(), |id| progress.get(id))
    }
}

/// The API and the page for `peer`. Starts the event hub on the current
/// tokio runtime (so call it inside one); the hub ends when the peer stops.
pub fn router(peer: lanspread::Peer, cfg: UiConfig) -> Router {
    let policy = Arc::new(guard::Policy::new(&cfg));
    let state = AppState { hub: events::Hub::start(peer.clone()), peer };
    Router::new()
        .merge(api::routes())
        .merge(assets::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(policy, guard::guard))
        .layer(header(CONTENT_SECURITY_POLICY, CSP))
        .layer(header(X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(X_FRAME_OPTIONS, "DENY"))
        .layer(header(REFERRER_POLICY, "no-referrer"))
        .layer(header(CACHE_CONTROL, "no-store"))
        .with_state(state)
}

/// A header set on every answer (the guard's refusals included).
fn header(name: axum::http::HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// Serves `router` on `listener` (TCP, or a Unix socket for local
/// control) until `shutdown` completes; then open event streams end,
/// requests in flight finish, and this returns.
pub async fn serve<L, F>(listener: L, router: Router, shutdown: F) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    F: Future<Output = ()> + Send + 'static,
{
    let (stop, stopping) = watch::channel(false);
    let router = router.layer(Extension(events::Stopping(stopping)));
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    axum::serve(listener, router).with_graceful_shutdown(signal).await
}
