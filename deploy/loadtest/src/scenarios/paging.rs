//! Paging: a workspace with --events events (100,000 by default), all delivered, then its event
//! list walked page by page (`GET /v1/events?limit=--page-size`, or with --list-console the
//! console's search `GET /v1/admin/events?workspace_id=...`, following `next_cursor`) from the
//! first page to the last, with the query's --list-filter. Page 1, page 50 and the last page
//! are each asked for again [`REPEATS`] times with the same cursor, and their median and
//! slowest time reported, beside the time of the whole walk: with paging by cursor a deep page
//! costs what the first does. The walk is also checked to list every event once (none twice,
//! none skipped), and the report says how many events shared one millisecond (a bulk
//! request's do).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::measure::{note_failures, wait_delivered, window};
use super::Ctx;
use crate::produce::{self, Producer};
use crate::report::{percentile, Figure, Phase};
use crate::stack::{Stack, ADMIN_TOKEN};

/// Times each timed page is asked for.
const REPEATS: usize = 5;

/// The pages timed on their own (from 1); the last page is timed as well.
const TIMED_PAGES: [usize; 2] = [1, 50];

/// Runs the paging scenario.
pub async fn run(ctx: &mut Ctx<'_>, stack: &mut Stack, producer: &Producer) -> anyhow::Result<()> {
    let args = ctx.args;
    let events = args.events.unwrap_or(100_000);
    let limit = args.page_size;

    // Arrange: the workspace's history, every event delivered.
    let sent = produce::exactly(args, producer, events).await;
    eprintln!(
        "herald-load: paging: {} events accepted; waiting for deliveries",
        sent.accepted.len()
    );
    let complete = wait_delivered(ctx, stack, sent.accepted.len()).await?;
    note_failures(ctx, &sent, complete);
    // The last outcomes are written a moment after their answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = List::new(ctx, stack).await?;

    // Act: walk the list, timing the pages asked for.
    let usage = window(stack);
    let walk_started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut pages = 0usize;
    let mut seen: HashSet<String> = HashSet::new();
    let mut twice = 0u64;
    let mut per_ms: HashMap<i64, u64> = HashMap::new();
    let mut page_ms: Vec<f64> = Vec::new();
    let mut timed: Vec<(String, Timing)> = Vec::new();
    // The page before, with its cursor and rows: a list that ends on a full page may answer
    // one more, empty page, and then the last page is the one before it.
    let mut previous: (Option<String>, usize) = (None, 0);
    loop {
        pages += 1;
        let started = Instant::now();
        let page = list.get(stack, cursor.as_deref()).await?;
        page_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let data = page["data"].as_array().context("a page without data")?;
        let rows = data.len();
        for e in data {
            if !seen.insert(e["uuid"].as_str().unwrap_or_default().to_string()) {
                twice += 1;
            }
            *per_ms
                .entry(e["time_created"].as_i64().unwrap_or(0))
                .or_default() += 1;
        }
        let next = page["next_cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if TIMED_PAGES.contains(&pages) {
            let timing = list.time(stack, cursor.as_deref()).await?;
            timed.push((format!("page {pages}"), timing));
        }
        if next.is_none() {
            let (n, at, rows) = if rows == 0 && pages > 1 {
                (pages - 1, previous.0.clone(), previous.1)
            } else {
                (pages, cursor.clone(), rows)
            };
            let timing = list.time(stack, at.as_deref()).await?;
            timed.push((format!("last page (page {n}, {rows} rows)"), timing));
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
    let mut figures = Vec::new();
    for (name, timing) in timed {
        figures.push(ms(format!("{name}, median of {REPEATS}"), timing.median));
        figures.push(ms(format!("{name}, slowest of {REPEATS}"), timing.max));
    }
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
    let listed = seen.len() as u64;
    if args.list_filter.is_empty() && listed != sent.accepted.len() as u64 {
        ctx.report.warnings.push(format!(
            "the walk listed {listed} distinct events; {} were accepted",
            sent.accepted.len()
        ));
    }
    if twice > 0 {
        ctx.report
            .warnings
            .push(format!("the walk listed {twice} events twice"));
    }
    ctx.report.phases.push(Phase {
        name: format!(
            "paging{}: {listed} events, {limit} per page{}",
            if args.list_console {
                " (console search)"
            } else {
                ""
            },
            if args.list_filter.is_empty() {
                String::new()
            } else {
                format!(", {}", args.list_filter.join("&"))
            }
        ),
        figures,
        counts: vec![
            ("events accepted".into(), sent.accepted.len() as u64),
            ("events listed".into(), listed),
            ("listed twice".into(), twice),
            ("pages".into(), pages as u64),
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

/// A timed page: the median and the slowest of [`REPEATS`] requests, ms.
struct Timing {
    median: f64,
    max: f64,
}

/// The list walked: its path, the query every page carries, and the token it is read with.
struct List {
    path: &'static str,
    query: Vec<(String, String)>,
    token: String,
}

impl List {
    /// The workspace's list (its secret key) or, with --list-console, the console's search
    /// of the run's one workspace (the admin token).
    async fn new(ctx: &Ctx<'_>, stack: &Stack) -> anyhow::Result<Self> {
        let args = ctx.args;
        let mut query = vec![("limit".to_string(), args.page_size.to_string())];
        for f in &args.list_filter {
            let (k, v) = f
                .split_once('=')
                .with_context(|| format!("--list-filter {f}: expected KEY=VALUE"))?;
            query.push((k.to_string(), v.to_string()));
        }
        if !args.list_console {
            return Ok(Self {
                path: "/v1/events",
                query,
                token: ctx.workspace.secret_key.clone(),
            });
        }
        let workspaces = get(
            stack,
            "/v1/workspaces",
            &[("limit".into(), "1".into())],
            ADMIN_TOKEN,
        )
        .await?;
        let ws = workspaces["data"][0]["id"]
            .as_str()
            .context("no workspace listed")?;
        query.push(("workspace_id".into(), ws.to_string()));
        Ok(Self {
            path: "/v1/admin/events",
            query,
            token: ADMIN_TOKEN.to_string(),
        })
    }

    /// One page, from after `cursor`.
    async fn get(&self, stack: &Stack, cursor: Option<&str>) -> anyhow::Result<Value> {
        let mut query = self.query.clone();
        if let Some(c) = cursor {
            query.push(("cursor".into(), c.to_string()));
        }
        get(stack, self.path, &query, &self.token).await
    }

    /// One page asked for [`REPEATS`] times.
    async fn time(&self, stack: &Stack, cursor: Option<&str>) -> anyhow::Result<Timing> {
        let mut times = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let started = Instant::now();
            self.get(stack, cursor).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(Timing {
            median: percentile(&times, 0.5),
            max: percentile(&times, 1.0),
        })
    }
}

async fn get(
    stack: &Stack,
    path: &str,
    query: &[(String, String)],
    token: &str,
) -> anyhow::Result<Value> {
    let resp = stack
        .http
        .get(format!("{}{path}", stack.url))
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("GET {path}"))?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("GET {path}"))
}
