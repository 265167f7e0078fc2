//! An example webhook receiver, verifying every request the way a customer's server would: with
//! the Standard Webhooks reference library, not with Herald's own code.
//!
//! ```sh
//! RECEIVER_SECRET=whsec_... cargo run -p herald-e2e --example receiver -- 127.0.0.1:9000
//! ```

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use standardwebhooks::Webhook;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let secret = std::env::var("RECEIVER_SECRET")
        .map_err(|_| anyhow::anyhow!("set RECEIVER_SECRET to the connection's whsec_ secret"))?;
    let webhook =
        Arc::new(Webhook::new(&secret).map_err(|e| anyhow::anyhow!("bad secret: {e:?}"))?);
    let app = Router::new().fallback(post(receive)).with_state(webhook);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("receiver listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(
    State(webhook): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match webhook.verify(&body, &headers) {
        Ok(()) => {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            println!("verified webhook {id}: {}", String::from_utf8_lossy(&body));
            StatusCode::NO_CONTENT
        }
        Err(e) => {
            println!("REJECTED a request that did not verify: {e:?}");
            StatusCode::UNAUTHORIZED
        }
    }
}
