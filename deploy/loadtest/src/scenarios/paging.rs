//! Paging: a workspace of --events (100,000) events sent in bulk and delivered, then its whole
//! history listed newest first, 50 per page, from the first page to the last, through the
//! console's search (`GET /v1/admin/events`, the same walk as `GET /v1/events`). Reports the
//! time of page 1, page 50 and the last page, each asked again 20 times from its cursor: with
//! cursor paging they cost the same, however deep. Also checks the walk listed every event
//! once, and reports how many events shared one millisecond (a bulk request's do).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::Value;

use super::measure::{burst_phase, window};
use super::Ctx;
use crate::produce::Producer;
use crate::report::{percentile, Figure, Phase};
use crate::stack::{Stack, ADMIN_TOKEN};

/// Items per page.
const LIMIT: usize = 50;
/// How often each measured page is asked again.
const REPEATS: usize = 20;

/// Runs the paging scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let events = ctx.args.events.unwrap_or(100_000);
    burst_phase(
        ctx,
        stack,
        producer,
        format!("paging: {events} events sent and delivered"),
        events,
    )
    .await?;
    let workspaces = get(stack, "/v1/workspaces?limit=1").await?;
    let ws = workspaces["data"][0]["id"]
        .as_str()
        .context("no workspace listed")?
        .to_string();
    let page =
        |cursor: &str| format!("/v1/admin/events?workspace_id={ws}&limit={LIMIT}&cursor={cursor}");

    eprintln!("herald-load: paging: walking the history, {LIMIT} per page");
    let usage = window(stack);
    let walk_started = Instant::now();
    // The cursor each page was asked with ("" for the first).
    let mut cursors = vec![String::new()];
    let mut seen = HashSet::new();
    let mut twice = 0u64;
    let mut per_ms: HashMap<i64, u64> = HashMap::new();
    let mut walk_ms = Vec::new();
    // The last page with items (a walk that ends exactly at a page's end asks one empty page).
    let mut last = 0;
    loop {
        let cursor = cursors.last().cloned().unwrap_or_default();
        let started = Instant::now();
        let body = get(stack, &page(&cursor)).await?;
        walk_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let data = body["data"].as_array().context("no data")?;
        if !data.is_empty() {
            last = cursors.len() - 1;
        }
        for e in data {
            if !seen.insert(e["uuid"].as_str().unwrap_or_default().to_string()) {
                twice += 1;
            }
            *per_ms
                .entry(e["time_created"].as_i64().unwrap_or(0))
                .or_default() += 1;
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursors.push(next.to_string()),
            None => break,
        }
    }
    let walk_s = walk_started.elapsed().as_secs_f64();
    let pages = cursors.len();
    if pages < 50 {
        bail!("only {pages} pages: send more --events");
    }

    let mut figures = Vec::new();
    for (name, index) in [("page 1", 0), ("page 50", 49), ("last page", last)] {
        let mut ms = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let started = Instant::now();
            get(stack, &page(&cursors[index])).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        for (what, value) in [("p50", percentile(&ms, 0.5)), ("max", ms[ms.len() - 1])] {
            figures.push(Figure {
                name: format!("{name} ({} of {pages}), {what}", index + 1),
                value,
                unit: "ms",
                vs_broker_hop: None,
            });
        }
    }
    walk_ms.sort_by(f64::total_cmp);
    figures.push(Figure {
        name: "any page of the walk, p50".into(),
        value: percentile(&walk_ms, 0.5),
        unit: "ms",
        vs_broker_hop: None,
    });
    figures.push(Figure {
        name: "any page of the walk, p99".into(),
        value: percentile(&walk_ms, 0.99),
        unit: "ms",
        vs_broker_hop: None,
    });
    figures.push(Figure {
        name: "whole walk".into(),
        value: walk_s,
        unit: "s",
        vs_broker_hop: None,
    });
    let listed = seen.len() as u64;
    if listed != events || twice > 0 {
        ctx.report.warnings.push(format!(
            "the walk listed {listed} distinct events of {events}, {twice} of them twice"
        ));
    }
    ctx.report.phases.push(Phase {
        name: format!("paging: {listed} events, {LIMIT} per page"),
        figures,
        counts: vec![
            ("pages".into(), pages as u64),
            ("events listed".into(), listed),
            ("listed twice".into(), twice),
            (
                "most events at one millisecond".into(),
                per_ms.values().copied().max().unwrap_or(0),
            ),
        ],
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    Ok(())
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    let resp = stack
        .http
        .get(format!("{}{path}", stack.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}
