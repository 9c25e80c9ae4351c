//! The page: three files built into the binary, so the UI needs nothing
//! on disk and serves exactly what was reviewed.

use crate::AppState;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const APP_JS: &str = include_str!("../assets/app.js");

/// `GET /`, `/app.css`, `/app.js`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .route("/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type)], body)
}
