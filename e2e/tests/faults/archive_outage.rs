//! PostgreSQL stopped under a stream with the archive on: deliveries go on, the router stays
//! ready and says the archive is behind; once PostgreSQL is back the backlog drains and no
//! history is lost or written twice.

use std::collections::HashSet;
use std::time::Duration;

use herald_e2e::pg::TestDb;
use herald_e2e::procs::{wait_status, ROUTER};
use herald_e2e::{eventually, Processes, Receiver};

use crate::stream::{all_delivered, Producer};
use crate::{run_quiet, serial};

/// The machine's PostgreSQL cluster (`pg_lsclusters`' first): version and name.
fn cluster() -> (String, String) {
    let out = std::process::Command::new("pg_lsclusters")
        .arg("-h")
        .output()
        .expect("pg_lsclusters (Debian's postgresql-common) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(v), Some(n)) => (v.to_string(), n.to_string()),
        _ => panic!("no PostgreSQL cluster: {text}"),
    }
}

/// The machine's PostgreSQL, stopped as a crash would (`-m immediate`: no checkpoint, crash
/// recovery on start); started again when dropped, even if the test fails.
struct PostgresStopped(String, String);

impl PostgresStopped {
    fn now() -> Self {
        let (version, name) = cluster();
        assert!(
            run_quiet(
                "pg_ctlcluster",
                &[&version, &name, "stop", "-m", "immediate"]
            ),
            "pg_ctlcluster {version} {name} stop"
        );
        Self(version, name)
    }
}

impl Drop for PostgresStopped {
    fn drop(&mut self) {
        if !run_quiet("pg_ctlcluster", &[&self.0, &self.1, "start"]) {
            eprintln!("pg_ctlcluster start failed; start PostgreSQL by hand");
        }
    }
}

async fn lag(http: &reqwest::Client, router: &str) -> f64 {
    let text = http
        .get(format!("http://{router}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("herald_archive_lag_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_delays_the_archive_and_loses_nothing() {
    let _turn = serial().await;
    let db = TestDb::create().await;
    let receiver = Receiver::start().await;
    let stack = Processes::start_for_test(
        "archive-outage",
        &[
            ("HERALD_ARCHIVE_URL", db.url.as_str()),
            ("HERALD_HOT_WINDOW", "10s"),
        ],
    )
    .await;
    let sk = stack.wired(&receiver, &["a"]).await.sk;
    let router = stack.proc(ROUTER).addr.to_string();
    let producer = Producer::start(&stack.url, &sk, 10, Duration::from_millis(20));
    let client = db.client().await;
    eventually("the archive filling", Duration::from_secs(40), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM herald_history", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        (n > 0).then_some(())
    })
    .await;
    drop(client);

    // Act: PostgreSQL away for 25 s while events keep coming.
    {
        let _stopped = PostgresStopped::now();
        let before = receiver.received("a").len();
        tokio::time::sleep(Duration::from_secs(25)).await;
        // Assert: deliveries went on, the router is ready, and it says the archive is behind.
        assert!(
            receiver.received("a").len() > before + 100,
            "deliveries stalled while PostgreSQL was down"
        );
        wait_status(&stack.http, &format!("http://{router}/readyz"), 200).await;
        let behind = lag(&stack.http, &router).await;
        assert!(behind >= 5.0, "herald_archive_lag_seconds {behind}");
    }
    let sent = producer.stop().await;
    all_delivered(&receiver, &["a"], &sent.accepted, Duration::from_secs(60)).await;

    // Assert: once back, the backlog drains: every accepted event is in the archive once.
    let client = eventually("PostgreSQL back", Duration::from_secs(30), || async {
        tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .ok()
            .map(|(c, conn)| {
                tokio::spawn(conn);
                c
            })
    })
    .await;
    let accepted: HashSet<&String> = sent.accepted.iter().collect();
    eventually("the backlog archived", Duration::from_secs(60), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM herald_history", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        (n as usize == accepted.len()).then_some(())
    })
    .await;
    let rows = client
        .query("SELECT uuid FROM herald_history", &[])
        .await
        .expect("rows");
    let archived: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let distinct: HashSet<&String> = archived.iter().collect();
    assert_eq!(distinct.len(), archived.len(), "an event archived twice");
    assert!(
        accepted.iter().all(|u| distinct.contains(*u)),
        "an accepted event is missing from the archive"
    );
    eventually("caught up", Duration::from_secs(20), || async {
        (lag(&stack.http, &router).await < 5.0).then_some(())
    })
    .await;
    let log =
        std::fs::read_to_string(stack.log_dir().join("herald-router.log")).unwrap_or_default();
    assert!(
        log.contains("archive is behind"),
        "no log line said the archive was behind"
    );
    drop(client);
    stack.stop().await;
    db.drop_db().await;
}
