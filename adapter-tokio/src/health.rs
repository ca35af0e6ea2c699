//! Ready-made `/livez` and `/readyz` handlers for axum (feature `axum`): `200 OK` or
//! `503 Service Unavailable`, with the [JSON form](keel_core::health::Json) of a
//! [`HealthReport`] as the body (`application/json`) and `Cache-Control: no-store`.
//!
//! The report comes from a closure called at every probe: a server's
//! [`ServeHandle::health`](crate::ServeHandle::health), or one you build from your machines.
//!
//! ```
//! use axum::{routing::get, Router};
//! use keel_tokio::core::health::{ComponentState, HealthReport};
//! use keel_tokio::health::{livez, readyz};
//!
//! let report = || HealthReport::new().with("db", ComponentState::Healthy);
//! let app: Router = Router::new()
//!     .route("/livez", get(livez(report)))
//!     .route("/readyz", get(readyz(report)));
//! ```
//!
//! Liveness fails only on a fatal state; readiness on anything that should stop traffic (see
//! [`keel_core::health`]). A HEAD request gets the same status without the body (axum strips it).

use std::future::{ready, Ready};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::health::HealthReport;

/// The readiness answer for `report`: 200 when ready, 503 when not; the JSON report as body.
#[must_use]
pub fn readiness_response(report: &HealthReport) -> Response {
    respond(report.is_ready(), report)
}

/// The liveness answer for `report`: 200 when live, 503 when not; the JSON report as body.
#[must_use]
pub fn liveness_response(report: &HealthReport) -> Response {
    respond(report.is_live(), report)
}

fn respond(ok: bool, report: &HealthReport) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        report.json().to_string(),
    )
        .into_response()
}

/// An axum handler for `/readyz`: calls `report` at every probe and answers with
/// [`readiness_response`].
pub fn readyz<F>(report: F) -> impl Fn() -> Ready<Response> + Clone + Send + Sync + 'static
where
    F: Fn() -> HealthReport + Clone + Send + Sync + 'static,
{
    move || ready(readiness_response(&report()))
}

/// An axum handler for `/livez`: calls `report` at every probe and answers with
/// [`liveness_response`].
pub fn livez<F>(report: F) -> impl Fn() -> Ready<Response> + Clone + Send + Sync + 'static
where
    F: Fn() -> HealthReport + Clone + Send + Sync + 'static,
{
    move || ready(liveness_response(&report()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::health::ComponentState;

    async fn body(r: Response) -> (StatusCode, String, String) {
        let status = r.status();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_live_and_not() {
        let draining = HealthReport::new().with("shutdown", ComponentState::draining());
        let (status, ct, text) = body(readyz(move || draining)().await).await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "application/json")
        );
        assert_eq!(
            text,
            r#"{"ready":false,"live":true,"components":[{"name":"shutdown","state":"unhealthy","reason":"draining"}],"omitted":0}"#
        );
        // Draining is not a reason to restart.
        assert_eq!(
            body(livez(move || draining)().await).await.0,
            StatusCode::OK
        );
        let fatal = HealthReport::new().with("accept", ComponentState::accept_stopped("EBADF"));
        assert_eq!(
            body(livez(move || fatal)().await).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let fine = HealthReport::new;
        assert_eq!(body(readyz(fine)().await).await.0, StatusCode::OK);
    }
}
