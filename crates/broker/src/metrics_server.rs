//! The broker's HTTP endpoint beside its Kafka listener (`metrics.listener`): `/metrics`
//! (Prometheus, OpenMetrics text), `/v1/status/live` (the process serves) and
//! `/v1/status/ready` (registered and unfenced, a controller known, no coordinator partition it leads still loading), for scrapers and
//! Kubernetes probes. The HTTP server is hyper's; nothing of HTTP is written here.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

/// OpenMetrics' content type, as `prometheus-client` writes it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves HTTP on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(answer(&broker, &request)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(broker: &Broker, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(path, "/metrics" | "/v1/status/live" | "/v1/status/ready");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /v1/status/live or /v1/status/ready\n",
        );
    }
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/metrics" => {
            let body = crate::blocking::block_in_place_or_run(|| broker.metrics.render(broker));
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", OPENMETRICS)
                .body(Full::new(Bytes::from(body)))
                .expect("a valid response")
        }
        "/v1/status/live" => text(StatusCode::OK, "live\n"),
        _ => match readiness(broker) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
    }
}

/// Why this broker should not get client traffic yet, if it should not.
fn readiness(broker: &Broker) -> Result<(), String> {
    let image = broker.image();
    match image.brokers.get(&broker.node_id) {
        None => return Err("not registered".into()),
        Some(b) if b.fenced => return Err("fenced by the controller".into()),
        Some(_) => {}
    }
    if broker.seat().leader().is_none() {
        return Err("no active controller is known".into());
    }
    let loading = broker.groups.loading_partitions() + broker.txns.loading_partitions();
    if loading > 0 {
        return Err(format!(
            "{loading} coordinator partitions (__consumer_offsets, __transaction_state) still loading"
        ));
    }
    Ok(())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}
