//! The rules every request meets before any route sees it (API.md,
//! "Authentication"): the Host names this UI, the token is right, and a
//! state change is a same-origin JSON request of bounded size.
//!
//! The UI listens on a port any local program (and any web page the user
//! opens, through the browser) can reach, so each rule closes a door:
//! the Host check DNS rebinding, the token other local users and pages,
//! the JSON content type and the Origin check cross-site form posts and
//! `fetch`es (which cannot send `application/json` without a preflight,
//! and there is no CORS to pass one).

use crate::error::ApiError;
use crate::token::Token;
use crate::UiConfig;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The cookie that carries the token.
pub const COOKIE_NAME: &str = "lanspread_token";

/// What the guard lets through.
pub(crate) struct Policy {
    token: Token,
    /// Allowed `Host` values, lowercase.
    hosts: Vec<String>,
}

impl Policy {
    pub(crate) fn new(cfg: &UiConfig) -> Self {
        let port = cfg.listen.port();
        let mut hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}"), cfg.listen.to_string()];
        hosts.extend(cfg.extra_hosts.iter().cloned());
        let hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        Policy { token: cfg.token.clone(), hosts }
    }
}

/// What a request that passed may do.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Go on to the route.
    Route,
    /// `GET /?token=T` with the right token: set the cookie, go to `/`.
    Login,
}

/// The middleware: checks `req` against the policy, in the order of API.md.
pub(crate) async fn guard(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    match check(&policy, &req) {
        Ok(Pass::Route) => next.run(req).await,
        Ok(Pass::Login) => login(&policy.token),
        Err(e) => e.into_response(),
    }
}

fn check(policy: &Policy, req: &Request) -> Result<Pass, ApiError> {
    let headers = req.headers();
    let host = check_host(policy, headers, req.uri())?;
    let pass = check_token(policy, req)?;
    if !is_page(req) && header(headers, "sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Err(ApiError::forbidden_origin("cross-site requests are refused"));
    }
    if matches!(*req.method(), Method::POST | Method::PUT) {
        check_content_type(headers)?;
        check_origin(headers, &host)?;
    }
    check_length(headers)?;
    Ok(pass)
}

/// The page itself: a link from anywhere may open it (a navigation is
/// harmless: it changes nothing and the answer goes to the user).
fn is_page(req: &Request) -> bool {
    req.method() == Method::GET && req.uri().path() == "/"
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's `Host` (or, for HTTP/2, its authority), if allowed.
fn check_host(policy: &Policy, headers: &HeaderMap, uri: &Uri) -> Result<String, ApiError> {
    let host = header(headers, HOST.as_str()).map(str::to_owned).or_else(|| uri.authority().map(|a| a.to_string())).unwrap_or_default();
    if policy.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        Ok(host)
    } else {
        Err(ApiError::forbidden_host(&host))
    }
}

fn check_token(policy: &Policy, req: &Request) -> Result<Pass, ApiError> {
    if is_page(req) {
        if let Some(t) = query_token(req.uri()) {
            return if policy.token.matches(&t) { Ok(Pass::Login) } else { Err(ApiError::unauthorized()) };
        }
    }
    let headers = req.headers();
    let offered = bearer(headers).map(str::to_owned).into_iter().chain(cookies(headers));
    // Every offered token is checked, so which one was right is not told
    // by timing either.
    let ok = offered.fold(false, |ok, t| policy.token.matches(&t) | ok);
    if ok {
        Ok(Pass::Route)
    } else {
        Err(ApiError::unauthorized())
    }
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn query_token(uri: &Uri) -> Option<String> {
    axum::extract::Query::<TokenQuery>::try_from_uri(uri).ok()?.0.token
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Every `lanspread_token` cookie the request carries (parsed by the
/// `cookie` crate).
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value().to_owned())
}

/// Sets the cookie and sends the browser to `/`, so the token leaves the
/// address bar (and the history) at once.
fn login(token: &Token) -> Response {
    let cookie = cookie::Cookie::build((COOKIE_NAME, token.to_hex())).http_only(true).same_site(cookie::SameSite::Strict).path("/").build();
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_static("/"));
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        headers.insert(SET_COOKIE, v);
    }
    response
}

/// A state change must say its body is JSON: a cross-site form cannot.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mime = header(headers, CONTENT_TYPE.as_str()).and_then(|v| v.split(';').next()).map(str::trim);
    if mime.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// A state change that names an origin must come from this UI's own.
fn check_origin(headers: &HeaderMap, host: &str) -> Result<(), ApiError> {
    match header(headers, ORIGIN.as_str()) {
        None => Ok(()),
        Some(origin) if origin.eq_ignore_ascii_case(&format!("http://{host}")) => Ok(()),
        Some(origin) => Err(ApiError::forbidden_origin(format!("requests from origin {origin:?} are refused"))),
    }
}

/// A body announced larger than the limit is refused before it is read
/// (one sent without a length is cut at the limit by the body limit layer).
fn check_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let length = header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > BODY_LIMIT as u64) {
        Err(ApiError::payload_too_large(BODY_LIMIT))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn policy() -> (Policy, Token) {
        let token = Token::generate();
        let mut cfg = UiConfig::new(token.clone(), "0.0.0.0:7878".parse().unwrap());
        cfg.extra_hosts.push("LanBox.local:7878".into());
        (Policy::new(&cfg), token)
    }

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn hosts_are_the_loopback_names_the_listen_address_and_the_extra_ones() {
        let (p, token) = policy();
        let auth = format!("Bearer {}", token.to_hex());
        for host in ["127.0.0.1:7878", "localhost:7878", "LOCALHOST:7878", "[::1]:7878", "0.0.0.0:7878", "lanbox.local:7878"] {
            let r = request(Method::GET, "/api/v1", &[("host", host), ("authorization", &auth)]);
            assert_eq!(check(&p, &r), Ok(Pass::Route), "{host}");
        }
        for host in ["evil.example:7878", "127.0.0.1:7879", "127.0.0.1", ""] {
            let r = request(Method::GET, "/api/v1", &[("host", host), ("authorization", &auth)]);
            assert_eq!(check(&p, &r).map_err(|e| e.code), Err("forbidden_host"), "{host}");
        }
    }

    #[test]
    fn the_token_comes_from_a_bearer_a_cookie_among_others_or_the_page_query() {
        let (p, token) = policy();
        let hex = token.to_hex();
        let host = ("host", "127.0.0.1:7878");
        let cookie = format!("theme=dark; {COOKIE_NAME}={hex}; x=y");
        let r = request(Method::GET, "/api/v1", &[host, ("cookie", &cookie)]);
        assert_eq!(check(&p, &r), Ok(Pass::Route));
        let r = request(Method::GET, "/api/v1", &[host, ("authorization", &format!("bearer {hex}"))]);
        assert_eq!(check(&p, &r), Ok(Pass::Route));
        let r = request(Method::GET, &format!("/?token={hex}"), &[host]);
        assert_eq!(check(&p, &r), Ok(Pass::Login));
        // The query opens the page only, never the API.
        let r = request(Method::GET, &format!("/api/v1?token={hex}"), &[host]);
        assert_eq!(check(&p, &r).map_err(|e| e.code), Err("unauthorized"));
        let r = request(Method::GET, "/?token=00", &[host, ("cookie", &cookie)]);
        assert_eq!(check(&p, &r).map_err(|e| e.code), Err("unauthorized"), "a wrong query token is refused");
        let r = request(Method::GET, "/api/v1", &[host, ("authorization", &format!("Basic {hex}"))]);
        assert_eq!(check(&p, &r).map_err(|e| e.code), Err("unauthorized"));
    }

    #[test]
    fn a_json_content_type_may_name_its_charset() {
        let (p, token) = policy();
        let auth = format!("Bearer {}", token.to_hex());
        let base = [("host", "127.0.0.1:7878"), ("authorization", auth.as_str())];
        for (ct, expect) in [
            ("application/json", Ok(Pass::Route)),
            ("Application/JSON; charset=utf-8", Ok(Pass::Route)),
            ("text/plain", Err("unsupported_media_type")),
            ("application/x-www-form-urlencoded", Err("unsupported_media_type")),
        ] {
            let r = request(Method::POST, "/api/v1/games/a/get", &[base[0], base[1], ("content-type", ct)]);
            assert_eq!(check(&p, &r).map_err(|e| e.code), expect, "{ct}");
        }
        let r = request(Method::PUT, "/api/v1/settings/game-dir", &base);
        assert_eq!(check(&p, &r).map_err(|e| e.code), Err("unsupported_media_type"), "no content type");
    }

    #[test]
    fn a_cross_site_fetch_is_refused_but_a_link_to_the_page_is_not() {
        let (p, token) = policy();
        let auth = format!("Bearer {}", token.to_hex());
        let r = request(
            Method::GET,
            "/api/v1/games",
            &[("host", "127.0.0.1:7878"), ("authorization", &auth), ("sec-fetch-site", "cross-site")],
        );
        assert_eq!(check(&p, &r).map_err(|e| e.code), Err("forbidden_origin"));
        let r = request(Method::GET, "/", &[("host", "127.0.0.1:7878"), ("authorization", &auth), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&p, &r), Ok(Pass::Route));
    }
}
