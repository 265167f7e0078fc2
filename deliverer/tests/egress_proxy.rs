//! Proxy variables of the environment must not carry deliveries past the destination guard: a
//! proxy resolves the destination itself, so the guard would check nothing. This binary holds
//! one test because it sets process-wide variables.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_deliverer::dispatch::Dispatcher;
use herald_deliverer::outcome::Verdict;
use herald_shared::model::{Connection, Event};
use herald_shared::netguard::DestinationPolicy;

/// A listener that counts the connections made to it and answers 200 to anything.
async fn listener(count: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65536];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

fn connection(url: String) -> Connection {
    Connection {
        name: "proxy test".into(),
        timeout_ms: 5_000,
        ..Connection::new(
            "ws_proxy",
            "con_proxy",
            &url,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            0,
        )
    }
}

#[tokio::test]
async fn proxy_variables_of_the_environment_are_ignored_and_only_the_explicit_proxy_is_used() {
    // Arrange: a "proxy" that must see nothing, named by every variable reqwest reads.
    let trap_hits = Arc::new(AtomicUsize::new(0));
    let trap = listener(trap_hits.clone()).await;
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, format!("http://{trap}"));
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let receiver_hits = Arc::new(AtomicUsize::new(0));
    let receiver = listener(receiver_hits.clone()).await;
    let policy = DestinationPolicy {
        allow_private: true,
        allowlist: Vec::new(),
    };
    let event = Event {
        uuid: "evt_proxy".into(),
        event: "proxy.test".into(),
        resource: "proxy".into(),
        resource_id: "1".into(),
        payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
        time_created: 1,
    };
    let conn = connection(format!("http://{receiver}/hook"));

    // Act: without an explicit proxy, the request goes straight to the destination.
    let direct = Dispatcher::new(policy.clone(), None).expect("client");
    let (attempt, verdict) = direct.send(&conn, &event, Duration::from_secs(5)).await;

    // Assert
    assert_eq!(verdict, Verdict::Success, "{attempt:?}");
    assert_eq!(receiver_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        trap_hits.load(Ordering::SeqCst),
        0,
        "the environment's proxy was used"
    );

    // With HERALD_EGRESS_PROXY, requests go through that proxy and nowhere else.
    let egress_hits = Arc::new(AtomicUsize::new(0));
    let egress = listener(egress_hits.clone()).await;
    let proxied = Dispatcher::new(policy, Some(format!("http://{egress}"))).expect("client");
    let (attempt, _) = proxied.send(&conn, &event, Duration::from_secs(5)).await;
    assert_eq!(egress_hits.load(Ordering::SeqCst), 1, "{attempt:?}");
    assert_eq!(receiver_hits.load(Ordering::SeqCst), 1);
    assert_eq!(trap_hits.load(Ordering::SeqCst), 0);
}
