//! The status page on the metrics listener: `GET /` is one static HTML page
//! (`status_page.html`: inline style and script, no external assets, a
//! Content-Security-Policy that allows none), which reads `GET
//! /status.json` every second — the management loop's typed answers to
//! `status`, `services` and `backends`, as `l4lb ctl` gets them — and draws
//! the services, their backends' health, weights and share of traffic, and
//! a chart of the last two minutes' packet rates.

use serde::Serialize;

use super::api::{BackendRow, Request, Response, ServiceRow, Status};

/// The page itself.
pub const PAGE: &str = include_str!("status_page.html");

/// What the page may load: its own inline style and script, and
/// `status.json` from where it came; nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// `status.json`.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub status: Status,
    pub services: Vec<ServiceRow>,
    pub backends: Vec<BackendRow>,
}

/// Builds `status.json` from three questions to the management loop (`ask`).
pub fn status_json(ask: impl Fn(Request) -> Result<Response, String>) -> Result<String, String> {
    let status = match ask(Request::Status)? {
        Response::Status(s) => *s,
        other => return Err(format!("status: unexpected answer {other:?}")),
    };
    let services = match ask(Request::Services)? {
        Response::Services(s) => s,
        other => return Err(format!("services: unexpected answer {other:?}")),
    };
    let backends = match ask(Request::Backends { service: None })? {
        Response::Backends(b) => b,
        other => return Err(format!("backends: unexpected answer {other:?}")),
    };
    serde_json::to_string(&StatusJson { status, services, backends }).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // No URL of another origin, no external script or style.
        for bad in ["http://", "https://", "//cdn", "<script src", "<link rel=\"stylesheet\"", "@import"] {
            assert!(!PAGE.contains(bad), "the status page has {bad}");
        }
        assert!(PAGE.contains("fetch(\"status.json\""));
    }

    #[test]
    fn status_json_is_the_three_answers_or_the_first_error() {
        let ask = |r: Request| -> Result<Response, String> {
            Ok(match r {
                Request::Status => Response::Status(Box::default()),
                Request::Services => Response::Services(vec![]),
                Request::Backends { .. } => Response::Backends(vec![]),
                _ => unreachable!(),
            })
        };
        let j: serde_json::Value = serde_json::from_str(&status_json(ask).unwrap()).unwrap();
        assert!(j["status"]["version"].is_string() && j["services"].is_array() && j["backends"].is_array());
        let refuse = |_: Request| -> Result<Response, String> { Err("l4lb is stopping".into()) };
        assert_eq!(status_json(refuse), Err("l4lb is stopping".into()));
    }
}
