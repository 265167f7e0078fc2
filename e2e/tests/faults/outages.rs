//! The broker and Redis going away mid-stream, and coming back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use herald_e2e::procs::{wait_status, DELIVERER, ROUTER};
use herald_e2e::{eventually, Processes, Receiver};

use crate::stream::{all_delivered, Producer};
use crate::{run_quiet, serial};

fn rabbitmqctl(args: &[&str]) -> bool {
    run_quiet("rabbitmqctl", args)
}

/// The machine's RabbitMQ application, stopped; started again when dropped, even if the test
/// fails half-way.
struct BrokerStopped;

impl BrokerStopped {
    fn now() -> Self {
        assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app");
        Self
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        if !rabbitmqctl(&["start_app"]) {
            eprintln!("rabbitmqctl start_app failed; start RabbitMQ by hand");
        }
        let _ = rabbitmqctl(&["await_startup"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_answers_503_and_loses_nothing() {
    let _turn = serial().await;
    let receiver = Receiver::start().await;
    let stack = Processes::start_for_test("broker-restart", &[]).await;
    let paths = ["a"];
    let sk = stack.wired(&receiver, &paths).await.sk;

    let producer = Producer::start(&stack.url, &sk, 1, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let _stopped = BrokerStopped::now();
        // While the broker is away: nothing accepted, and every service says it is not ready.
        let (status, body) = stack
            .call(
                "POST",
                "/v1/events",
                &sk,
                Some(json!({"event": "order.created", "resource": "order", "resource_id": "o1", "payload": {}})),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "broker_unavailable", "{body}");
        for addr in [&stack.proc(ROUTER).addr, &stack.proc(DELIVERER).addr] {
            wait_status(&stack.http, &format!("http://{addr}/readyz"), 503).await;
        }
        wait_status(&stack.http, &format!("{}/readyz", stack.url), 503).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Back: services reconnect, re-declare and consume again on their own.
    for url in [
        format!("{}/readyz", stack.url),
        format!("http://{}/readyz", stack.proc(ROUTER).addr),
        format!("http://{}/readyz", stack.proc(DELIVERER).addr),
    ] {
        wait_status(&stack.http, &url, 200).await;
    }
    let before = producer.accepted();
    eventually(
        "intake accepting again",
        Duration::from_secs(30),
        || async { (producer.accepted() > before + 20).then_some(()) },
    )
    .await;
    let sent = producer.stop().await;
    assert!(
        sent.unavailable > 0,
        "some requests met the outage: {sent:?}"
    );

    let tallies = all_delivered(&receiver, &paths, &sent.accepted, Duration::from_secs(90)).await;
    println!(
        "fault report (broker restart): {} accepted, {} answered 503, all delivered, {} duplicates",
        sent.accepted.len(),
        sent.unavailable,
        tallies[0].duplicates()
    );
    stack.stop().await;
}

/// A Redis of the test's own, with persistence (as production runs it), that can be killed and
/// started again on the same port and data folder.
pub(crate) struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub(crate) fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--dir",
                &self.dir.to_string_lossy(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis starts");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: what Redis had written to its append-only file survives.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The longest a request with a known key may wait for intake's answer while Redis is away
/// (intake gives Redis a quarter of a second, then honours the key it knows).
const KNOWN_KEY_ANSWER: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_no_outcome() {
    let _turn = serial().await;
    let mut redis = OwnRedis::start();
    let receiver = Receiver::start().await;
    let url = redis.url();
    let stack = Processes::start_for_test("redis-restart", &[("HERALD_REDIS_URL", &url)]).await;
    let paths = ["a"];
    let sk = stack.wired(&receiver, &paths).await.sk;

    let producer = Producer::start(&stack.url, &sk, 10, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outage = Instant::now();
    redis.kill();
    let before_outage = producer.accepted();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = producer.accepted() - before_outage;
    let back = Instant::now();
    redis.spawn();
    let before = producer.accepted();
    eventually(
        "intake accepting again",
        Duration::from_secs(30),
        || async { (producer.accepted() > before + 50).then_some(()) },
    )
    .await;
    let sent = producer.stop().await;
    assert!(
        during > 0,
        "intake kept accepting from a known key while Redis was away"
    );
    // A known key is honoured without waiting out the client's reconnection attempts: no
    // request sent while Redis was away waited long for its answer.
    let slowest = sent.slowest_between(outage, back);
    assert!(
        slowest < KNOWN_KEY_ANSWER,
        "a request sent while Redis was away waited {slowest:?} for its answer"
    );

    all_delivered(&receiver, &paths, &sent.accepted, Duration::from_secs(90)).await;
    // Every delivery's outcome reached the history, outage or not (the last writes may still
    // be in their retry loop: a second look after a pause).
    let mut missing: Vec<&String> = Vec::new();
    for uuid in &sent.accepted {
        if !recorded(&stack, &sk, uuid).await {
            missing.push(uuid);
        }
    }
    if !missing.is_empty() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut still = Vec::new();
        for uuid in missing {
            if !recorded(&stack, &sk, uuid).await {
                still.push(uuid);
            }
        }
        missing = still;
    }
    assert!(
        missing.is_empty(),
        "{} of {} events have no recorded outcome, e.g. {:?}",
        missing.len(),
        sent.accepted.len(),
        missing.first()
    );
    println!(
        "fault report (Redis restart): {} accepted ({} while Redis was down), {} answered 503, \
         every outcome recorded",
        sent.accepted.len(),
        during,
        sent.unavailable
    );
    stack.stop().await;
}

/// The event's one delivery is recorded as delivered, with its attempt.
async fn recorded(stack: &Processes, sk: &str, uuid: &str) -> bool {
    let (status, body) = stack
        .call("GET", &format!("/v1/events/{uuid}"), sk, None)
        .await;
    status == 200
        && body["deliveries"][0]["status"] == "delivered"
        && body["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
}
