//! The report: figures per phase with their ratio to the broker hop measured in the same run,
//! CPU and memory per process, printed as a table and written as JSON.

use serde::Serialize;
use serde_json::Value;

use crate::hop::HopReport;
use crate::procstat::WindowReport;
use crate::redisstat::KeyCensus;

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is, e.g. `deliveries/s end to end`.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit, e.g. `/s`, `ms`, `MiB`.
    pub unit: &'static str,
    /// For rates: the value divided by the broker hop's messages/s.
    pub vs_broker_hop: Option<f64>,
}

/// One phase of a scenario (most have one; `scaleout` has two).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Its name, e.g. `throughput` or `1 deliverer`.
    pub name: String,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Counters (events accepted, deliveries, duplicates, verification failures ...).
    pub counts: Vec<(String, u64)>,
    /// CPU and memory of each process during the phase.
    pub usage: WindowReport,
    /// Deliveries in each second since the first accept (for plotting).
    pub deliveries_per_second: Vec<u64>,
}

/// One sample of a soak: Redis, the services' memory and the delivery rate at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Events delivered so far (deliveries / connections).
    pub delivered_events: u64,
    /// Deliveries per second since the previous sample.
    pub deliveries_per_s: f64,
    /// Redis's `used_memory` (the whole server), bytes.
    pub used_memory: u64,
    /// `used_memory` minus its value when the load started, per delivered event.
    pub bytes_per_event: Option<f64>,
    /// `VmRSS` of each service process, MiB.
    pub rss_mib: Vec<(String, f64)>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// When (UTC).
    pub date_utc: String,
    /// `git describe --always --dirty` of the working directory.
    pub git_commit: String,
    /// Cores, CPU model, memory.
    pub machine: Value,
    /// What the run used: options and the services' settings.
    pub settings: Value,
    /// The broker hop of the same run.
    pub broker_hop: Option<HopReport>,
    /// CPU and memory during the hop.
    pub broker_hop_usage: Option<WindowReport>,
    /// The scenario's phases.
    pub phases: Vec<Phase>,
    /// Samples over time (soak).
    pub timeline: Vec<Tick>,
    /// The run's Redis keys by shape, once delivery finished (soak).
    pub redis_keys: Option<KeyCensus>,
    /// Ratios between phases (e.g. scale-out factor).
    pub ratios: Vec<(String, f64)>,
    /// Anything that went wrong but did not stop the run.
    pub warnings: Vec<String>,
}

impl Report {
    /// A rate figure, with its ratio to the hop when there is one.
    pub fn rate(&self, name: &str, value: f64) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: "/s",
            vs_broker_hop: self.broker_hop.as_ref().map(|h| value / h.messages_per_s),
        }
    }

    /// Prints the report as a table.
    pub fn print(&self) {
        println!();
        println!("herald-load: {}", self.scenario);
        println!(
            "  {}  commit {}  {}",
            self.date_utc,
            self.git_commit,
            self.machine["summary"].as_str().unwrap_or_default()
        );
        if let Some(h) = &self.broker_hop {
            println!();
            println!(
                "broker hop ({}, {} x {} B persistent, confirms window {}, prefetch {}, {}):",
                h.queue_type, h.messages, h.message_bytes, h.confirm_window, h.prefetch, h.ack_mode
            );
            println!(
                "  {:<44} {:>12.0} /s   (confirms {:.0}/s)",
                "messages/s (publish+confirm+deliver+ack)", h.messages_per_s, h.confirms_per_s
            );
            if let Some(u) = &self.broker_hop_usage {
                print_usage(u);
            }
        }
        for phase in &self.phases {
            println!();
            println!("{}:", phase.name);
            println!(
                "  {:<44} {:>12} {:<5} {:>10}",
                "figure", "value", "", "vs hop"
            );
            for f in &phase.figures {
                let ratio = f
                    .vs_broker_hop
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_default();
                let value = if f.value.abs() >= 100.0 {
                    format!("{:.0}", f.value)
                } else {
                    format!("{:.2}", f.value)
                };
                println!("  {:<44} {:>12} {:<5} {:>10}", f.name, value, f.unit, ratio);
            }
            let counts: Vec<String> = phase
                .counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("  counts: {}", counts.join(", "));
            print_usage(&phase.usage);
        }
        print_timeline(&self.timeline);
        if let Some(keys) = &self.redis_keys {
            print_keys(keys);
        }
        if !self.ratios.is_empty() {
            println!();
            for (name, r) in &self.ratios {
                println!("  {name:<44} {r:>12.2}x");
            }
        }
        for w in &self.warnings {
            println!("warning: {w}");
        }
        println!();
    }
}

fn print_usage(u: &WindowReport) {
    println!(
        "  {:<34} {:>7} {:>11} {:>11} {:>9}   over {:.1} s, machine busy {}",
        "process",
        "cpu %",
        "peak RSS",
        "VmHWM",
        "RSS end",
        u.seconds,
        u.machine_busy_percent
            .map(|b| format!("{b:.0} %"))
            .unwrap_or_else(|| "?".into())
    );
    for p in &u.processes {
        println!(
            "  {:<34} {:>7.0} {:>7.1} MiB {:>11} {:>5.1} MiB",
            p.name,
            p.cpu_percent,
            p.peak_rss_sampled_mib,
            p.vm_hwm_mib
                .map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "-".into()),
            p.rss_end_mib
        );
    }
}

fn print_timeline(ticks: &[Tick]) {
    let Some(first) = ticks.first() else {
        return;
    };
    println!();
    let names: Vec<&str> = first.rss_mib.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "  {:>7} {:>10} {:>11} {:>13} {:>11}   RSS MiB: {}",
        "t s",
        "events",
        "deliv/s",
        "used_memory",
        "B/event",
        names.join(", ")
    );
    for t in ticks {
        let rss: Vec<String> = t.rss_mib.iter().map(|(_, m)| format!("{m:.1}")).collect();
        println!(
            "  {:>7.0} {:>10} {:>11.0} {:>9.1} MiB {:>11}   {}",
            t.t_s,
            t.delivered_events,
            t.deliveries_per_s,
            t.used_memory as f64 / (1024.0 * 1024.0),
            t.bytes_per_event
                .map(|b| format!("{b:.0}"))
                .unwrap_or_else(|| "-".into()),
            rss.join(", ")
        );
    }
}

fn print_keys(census: &KeyCensus) {
    println!();
    println!(
        "  the run's Redis keys: {} keys, {:.1} MiB (MEMORY USAGE)",
        census.keys,
        census.bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  {:<44} {:<6} {:>10} {:>12} {:>9}",
        "key shape", "type", "keys", "bytes", "B/key"
    );
    for k in &census.kinds {
        println!(
            "  {:<44} {:<6} {:>10} {:>12} {:>9.0}",
            k.pattern,
            k.kind,
            k.keys,
            k.bytes,
            k.bytes as f64 / k.keys.max(1) as f64
        );
    }
}

/// Percentile `q` (0..=1) of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
