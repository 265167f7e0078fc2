//! Replay: --events dead letters (10,000 by default), made by a receiver that answers 500 to
//! everything while the retry schedule allows no retry, then replayed by one
//! `POST /v1/dead-letters/replay` with an event filter, to a receiver that now answers 200.
//! Measures ingest's RSS before the replay, at its peak while the replay runs (`VmHWM`, reset
//! just before), and once every replayed delivery arrived; and how long the replay took.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herald_e2e::procs::INGEST;
use serde_json::{json, Value};

use super::measure::{note_failures, wait_delivered, window};
use super::Ctx;
use crate::procstat;
use crate::produce::{self, Producer};
use crate::report::{Figure, Phase};
use crate::stack::Stack;

/// The largest page the API serves.
const PAGE: usize = 250;

/// Runs the replay scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let events = args.events.unwrap_or(10_000);

    // Arrange: every event dead-lettered at its first attempt.
    ctx.receiver.set_failing(true);
    let sent = produce::exactly(args, producer, events).await;
    let accepted = sent.accepted.len();
    eprintln!("herald-load: replay: {accepted} events accepted; waiting for their dead letters");
    let made = Instant::now();
    let dead = wait_dead_letters(ctx, stack, accepted).await?;
    eprintln!(
        "herald-load: replay: {dead} dead letters listed after {:.1} s",
        made.elapsed().as_secs_f64()
    );
    ctx.receiver.set_failing(false);
    ctx.receiver.reset();

    // Act: one replay of them all by filter.
    let ingest = stack.proc(INGEST).pid();
    let rss_before = procstat::status_mib(ingest, "VmRSS").unwrap_or(f64::NAN);
    let hwm_reset = procstat::reset_peak(ingest);
    if !hwm_reset {
        ctx.report.warnings.push(
            "could not reset ingest's VmHWM: its peak below is the peak since it started".into(),
        );
    }
    let usage = window(stack);
    let started = Instant::now();
    let resp = stack
        .http
        .post(format!("{}/v1/dead-letters/replay", stack.url))
        .bearer_auth(&ctx.workspace.secret_key)
        .json(&json!({"event": "load.tick"}))
        .send()
        .await
        .context("POST /v1/dead-letters/replay")?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    let answered_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("herald-load: replay: answered {status} {answer} after {answered_ms:.0} ms");
    if !(200..300).contains(&status) {
        bail!("POST /v1/dead-letters/replay answered {status}: {answer}");
    }
    let complete = wait_delivered(ctx, stack, dead).await?;
    let replay_seconds = started.elapsed().as_secs_f64();
    let peak = procstat::status_mib(ingest, "VmHWM").unwrap_or(f64::NAN);
    // What ingest keeps once the replay is over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = procstat::status_mib(ingest, "VmRSS").unwrap_or(f64::NAN);
    let left = count_dead_letters(ctx, stack).await?;

    // Report.
    note_failures(ctx, &sent, complete);
    let mib = |name: &str, value: f64| Figure {
        name: name.into(),
        value,
        unit: "MiB",
        vs_broker_hop: None,
    };
    let delivered = ctx.receiver.unique() as u64;
    let figures = vec![
        mib("ingest RSS before the replay", rss_before),
        mib("ingest peak RSS during the replay (VmHWM)", peak),
        mib("ingest RSS after the replay", rss_after),
        Figure {
            name: "replay request answered after".into(),
            value: answered_ms,
            unit: "ms",
            vs_broker_hop: None,
        },
        Figure {
            name: "replay: request to last delivery".into(),
            value: replay_seconds,
            unit: "s",
            vs_broker_hop: None,
        },
        ctx.report
            .rate("replayed deliveries/s", delivered as f64 / replay_seconds),
    ];
    let counts = vec![
        ("events accepted".to_string(), accepted as u64),
        ("dead letters".into(), dead as u64),
        ("replay answer status".into(), u64::from(status)),
        (
            "replay answer count".into(),
            answer["count"].as_u64().unwrap_or(0),
        ),
        ("delivered after the replay".into(), delivered),
        ("dead letters left".into(), left as u64),
        (
            "duplicates".into(),
            ctx.receiver.duplicates.load(Ordering::Relaxed),
        ),
    ];
    if left > 0 {
        ctx.report
            .warnings
            .push(format!("{left} dead letters still listed after the replay"));
    }
    ctx.report.phases.push(Phase {
        name: format!("replay of {dead} dead letters by filter"),
        figures,
        counts,
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    Ok(())
}

/// Waits until `expected` dead letters are listed, or nothing changed for --stall-timeout;
/// returns how many are.
async fn wait_dead_letters(
    ctx: &Ctx<'_>,
    stack: &mut Stack,
    expected: usize,
) -> anyhow::Result<usize> {
    let mut last = (0, Instant::now());
    loop {
        stack.check_alive()?;
        let n = count_dead_letters(ctx, stack).await?;
        if n >= expected {
            return Ok(n);
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(ctx.args.stall_timeout) {
            if n == 0 {
                bail!("no dead letter was listed within --stall-timeout");
            }
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Counts the workspace's dead letters by walking the list page by page.
async fn count_dead_letters(ctx: &Ctx<'_>, stack: &Stack) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut req = stack
            .http
            .get(format!("{}/v1/dead-letters", stack.url))
            .bearer_auth(&ctx.workspace.secret_key)
            .query(&[("limit", PAGE.to_string())]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let resp = req.send().await.context("GET /v1/dead-letters")?;
        let status = resp.status();
        let page: Value = resp.json().await.context("GET /v1/dead-letters")?;
        if !status.is_success() {
            bail!("GET /v1/dead-letters: {status}: {page}");
        }
        count += page["data"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Ok(count),
        }
    }
}
