//! Paging: a workspace with --events events (100,000 by default), all delivered, then its event
//! list walked page by page (`GET /v1/events?limit=--page-size`, following `next_cursor`) from
//! the first page to the last, with the query's --list-filter. Page 1, page 50 and the last page are each asked for again
//! --page-repeats times with the same cursor, and their median time reported, beside the time
//! of the whole walk: with paging by cursor a deep page costs what the first does.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::measure::{note_failures, wait_delivered, window};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::{percentile, Figure, Phase};
use crate::stack::Stack;

/// Times each timed page is asked for.
const REPEATS: usize = 5;

/// The pages timed on their own (from 1); the last page is timed as well.
const TIMED_PAGES: [usize; 2] = [1, 50];

/// Runs the paging scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let events = args.events.unwrap_or(100_000);
    let batch = args.batch() as u64;
    let limit = args.page_size;

    // Arrange: the workspace's history, every event delivered.
    let sent = produce::closed_loop(
        producer,
        args.producers,
        true,
        produce::body(batch as usize, args.payload_bytes),
        Instant::now() + Duration::from_secs(3600),
        Some(events.div_ceil(batch)),
    )
    .await;
    eprintln!(
        "herald-load: paging: {} events accepted; waiting for deliveries",
        sent.accepted.len()
    );
    let complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
    note_failures(ctx, &sent, complete);
    // The last outcomes are written a moment after their answers.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Act: walk the list, timing the pages asked for.
    let usage = window(stack);
    let walk_started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut pages = 0usize;
    let mut listed = 0usize;
    let mut page_ms: Vec<f64> = Vec::new();
    let mut timed: Vec<(String, f64)> = Vec::new();
    // The page before, with its cursor and rows: a list that ends on a full page may answer
    // one more, empty page, and then the last page is the one before it.
    let mut previous: (Option<String>, usize) = (None, 0);
    loop {
        pages += 1;
        let started = Instant::now();
        let page = get_page(ctx, stack, limit, cursor.as_deref()).await?;
        page_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let rows = page["data"].as_array().map_or(0, Vec::len);
        listed += rows;
        let next = page["next_cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if TIMED_PAGES.contains(&pages) {
            let median = time_page(ctx, stack, limit, cursor.as_deref()).await?;
            timed.push((format!("page {pages}"), median));
        }
        if next.is_none() {
            let (n, at, rows) = if rows == 0 && pages > 1 {
                (pages - 1, previous.0.clone(), previous.1)
            } else {
                (pages, cursor.clone(), rows)
            };
            let median = time_page(ctx, stack, limit, at.as_deref()).await?;
            timed.push((format!("last page (page {n}, {rows} rows)"), median));
            break;
        }
        previous = (cursor, rows);
        cursor = next;
    }
    let walk_seconds = walk_started.elapsed().as_secs_f64();
    page_ms.sort_by(f64::total_cmp);

    // Report.
    let ms = |name: String, value: f64| Figure {
        name,
        value,
        unit: "ms",
        vs_broker_hop: None,
    };
    let mut figures: Vec<Figure> = timed
        .into_iter()
        .map(|(name, median)| ms(format!("{name}, median of {REPEATS}"), median))
        .collect();
    figures.push(ms(
        "any page p50 (the walk)".into(),
        percentile(&page_ms, 0.5),
    ));
    figures.push(ms(
        "any page p99 (the walk)".into(),
        percentile(&page_ms, 0.99),
    ));
    figures.push(ms(
        "any page max (the walk)".into(),
        percentile(&page_ms, 1.0),
    ));
    figures.push(Figure {
        name: "the whole walk".into(),
        value: walk_seconds,
        unit: "s",
        vs_broker_hop: None,
    });
    if listed != sent.accepted.len() {
        ctx.report.warnings.push(format!(
            "the walk listed {listed} events; {} were accepted",
            sent.accepted.len()
        ));
    }
    ctx.report.phases.push(Phase {
        name: format!(
            "paging: {listed} events, {limit} per page{}",
            if args.list_filter.is_empty() {
                String::new()
            } else {
                format!(", {}", args.list_filter.join("&"))
            }
        ),
        figures,
        counts: vec![
            ("events accepted".into(), sent.accepted.len() as u64),
            ("events listed".into(), listed as u64),
            ("pages".into(), pages as u64),
        ],
        usage: usage.finish(),
        deliveries_per_second: Vec::new(),
    });
    Ok(())
}

/// The median time of [`REPEATS`] requests for one page, ms.
async fn time_page(
    ctx: &Ctx<'_>,
    stack: &Stack,
    limit: usize,
    cursor: Option<&str>,
) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let started = Instant::now();
        get_page(ctx, stack, limit, cursor).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(percentile(&times, 0.5))
}

/// One page of the workspace's events.
async fn get_page(
    ctx: &Ctx<'_>,
    stack: &Stack,
    limit: usize,
    cursor: Option<&str>,
) -> anyhow::Result<Value> {
    let mut req = stack
        .http
        .get(format!("{}/v1/events", stack.url))
        .bearer_auth(&ctx.workspace.secret_key)
        .query(&[("limit", limit.to_string())]);
    for f in &ctx.args.list_filter {
        let (k, v) = f
            .split_once('=')
            .with_context(|| format!("--list-filter {f}: expected KEY=VALUE"))?;
        req = req.query(&[(k, v)]);
    }
    if let Some(c) = cursor {
        req = req.query(&[("cursor", c)]);
    }
    let resp = req.send().await.context("GET /v1/events")?;
    let status = resp.status();
    let page: Value = resp.json().await.context("GET /v1/events")?;
    if !status.is_success() {
        bail!("GET /v1/events: {status}: {page}");
    }
    Ok(page)
}
