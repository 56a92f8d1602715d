//! `/health` (etcd 3.4's body and meaning), `/livez` and `/readyz` (etcd
//! 3.6's checks, `?verbose` and `?exclude=`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{plain, HttpSurface};

/// How long the linearizable check may take, as etcd's health handler.
const CHECK_TIMEOUT: Duration = Duration::from_secs(7);

/// The alarms raised in the cluster as this member applied them, by
/// etcd's names (`NOSPACE`, `CORRUPT`).
fn active_alarms(surface: &HttpSurface) -> Vec<&'static str> {
    surface.member().alarms().raised_names()
}

async fn linearizable_read(surface: &HttpSurface) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, surface.member().read_barrier(false)).await,
        Ok(Ok(()))
    )
}

fn has_leader(surface: &HttpSurface) -> bool {
    surface.member().node().status().leader() != 0
}

pub async fn health(State(surface): State<Arc<HttpSurface>>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let excluded: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "exclude")
        .flat_map(|(_, v)| v.split(','))
        .collect();
    let serializable = query.iter().any(|(k, v)| k == "serializable" && v == "true");
    let alarmed = active_alarms(&surface).iter().any(|a| !excluded.contains(a));
    let healthy = !alarmed && has_leader(&surface) && (serializable || linearizable_read(&surface).await);
    if healthy {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            r#"{"health":"true"}"#,
        )
            .into_response();
    }
    // etcd answers an unhealthy member through Go's `http.Error`, which adds
    // a newline and `nosniff`.
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "{\"health\":\"false\"}\n",
    )
        .into_response()
}

/// One named check's outcome.
struct Check {
    name: &'static str,
    passed: bool,
    excluded: bool,
}

/// Answers like etcd 3.6's `/livez` and `/readyz`: `ok`, or the failed
/// checks and `<what> check failed` with 503; `?verbose` lists every check.
fn report(what: &str, checks: &[Check], verbose: bool) -> Response {
    let failed = checks.iter().any(|c| !c.passed && !c.excluded);
    let mut body = String::new();
    for c in checks {
        let line = match (c.excluded, c.passed) {
            (true, _) => format!("[+]{} excluded: ok\n", c.name),
            (false, true) => format!("[+]{} ok\n", c.name),
            (false, false) => format!("[-]{} failed: reason withheld\n", c.name),
        };
        if verbose || (failed && !c.passed && !c.excluded) {
            body.push_str(&line);
        }
    }
    if failed {
        body.push_str(&format!("{what} check failed\n"));
        plain(StatusCode::SERVICE_UNAVAILABLE, body)
    } else {
        if verbose {
            body.push_str(&format!("{what} check passed\n"));
        } else {
            body.push_str("ok");
        }
        plain(StatusCode::OK, body)
    }
}

fn flags(query: &HashMap<String, String>, raw: &[(String, String)]) -> (bool, Vec<String>) {
    let verbose = query.contains_key("verbose");
    let excluded = raw
        .iter()
        .filter(|(k, _)| k == "exclude")
        .flat_map(|(_, v)| v.split(',').map(str::to_string))
        .collect();
    (verbose, excluded)
}

async fn run_checks(surface: &HttpSurface, names: &[&'static str], excluded: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    for &name in names {
        let skip = excluded.iter().any(|e| e == name);
        let passed = skip
            || match name {
                "data_corruption" => !active_alarms(surface).contains(&"CORRUPT"),
                "serializable_read" => true,
                "linearizable_read" => has_leader(surface) && linearizable_read(surface).await,
                _ => true,
            };
        checks.push(Check {
            name,
            passed,
            excluded: skip,
        });
    }
    checks
}

pub async fn livez(State(surface): State<Arc<HttpSurface>>, Query(raw): Query<Vec<(String, String)>>) -> Response {
    let query: HashMap<String, String> = raw.iter().cloned().collect();
    let (verbose, excluded) = flags(&query, &raw);
    let checks = run_checks(&surface, &["serializable_read"], &excluded).await;
    report("livez", &checks, verbose)
}

pub async fn readyz(State(surface): State<Arc<HttpSurface>>, Query(raw): Query<Vec<(String, String)>>) -> Response {
    let query: HashMap<String, String> = raw.iter().cloned().collect();
    let (verbose, excluded) = flags(&query, &raw);
    let checks = run_checks(&surface, &["data_corruption", "serializable_read", "linearizable_read"], &excluded).await;
    report("readyz", &checks, verbose)
}
