//! What a process costs, read from `/proc`: resident memory now and at its peak (`VmRSS`,
//! `VmHWM` in `/proc/<pid>/status`) and CPU time (`utime + stime` in `/proc/<pid>/stat`).
//! A sampler keeps the largest `VmRSS` seen during a window, which is what counts for processes
//! that were running long before the window (the broker, Redis), whose `VmHWM` is their lifetime's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process watched during a scenario.
#[derive(Debug, Clone)]
pub struct Watched {
    /// A label for the report, e.g. `herald-deliverer#2`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Whether it was started for this run (its `VmHWM` is then the run's peak).
    pub ours: bool,
}

/// One process's cost over a window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// The label.
    pub name: String,
    /// The pid.
    pub pid: u32,
    /// Average CPU over the window, in percent of one core.
    pub cpu_percent: f64,
    /// Largest `VmRSS` sampled during the window, MiB.
    pub peak_rss_sampled_mib: f64,
    /// `VmHWM` at the end of the window (peak RSS since the process started), MiB; only for
    /// processes this run started.
    pub vm_hwm_mib: Option<f64>,
    /// `VmRSS` at the end of the window, MiB.
    pub rss_end_mib: f64,
}

/// Reads one `kB` field of `/proc/<pid>/status`, in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// Resets a process's `VmHWM` to its current RSS (`5` into `/proc/<pid>/clear_refs`, Linux
/// 4.0 and later), so that the next `VmHWM` is the peak of what follows; false if refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time used so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // fixed: state is field 3, utime field 14, stime field 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and total jiffies of the whole machine, from the `cpu` line of `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Pids of running processes whose command name (`/proc/<pid>/comm`) is `comm`.
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// The broker's and Redis's processes, when they run on this machine.
pub fn infrastructure() -> Vec<Watched> {
    let mut out = Vec::new();
    for (comm, label) in [
        ("beam.smp", "rabbitmq (beam.smp)"),
        ("redis-server", "redis-server"),
    ] {
        for pid in pids_named(comm) {
            // rabbitmqctl runs a beam.smp of its own for a moment; only the broker boots `rabbit`.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if comm == "beam.smp" && !String::from_utf8_lossy(&cmdline).contains("rabbit\0boot") {
                continue;
            }
            out.push(Watched {
                name: label.to_string(),
                pid,
                ours: false,
            });
        }
    }
    out
}

/// The infrastructure, and this process (the producers and the receiver).
pub fn infrastructure_and_self() -> Vec<Watched> {
    let mut w = vec![Watched {
        name: "herald-load (producers, receiver)".into(),
        pid: std::process::id(),
        ours: false,
    }];
    w.extend(infrastructure());
    w
}

/// Measures a set of processes from [`Window::start`] to [`Window::finish`].
pub struct Window {
    procs: Vec<Watched>,
    started: Instant,
    cpu_start: HashMap<u32, u64>,
    machine_start: Option<(u64, u64)>,
    peaks: Arc<Mutex<HashMap<u32, f64>>>,
    sampler: tokio::task::JoinHandle<()>,
}

/// What a window measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowReport {
    /// Seconds the window lasted.
    pub seconds: f64,
    /// Machine-wide CPU busy during the window, percent of all cores.
    pub machine_busy_percent: Option<f64>,
    /// Per process.
    pub processes: Vec<Usage>,
}

impl Window {
    /// Starts measuring `procs`, sampling RSS every 200 ms.
    pub fn start(procs: Vec<Watched>) -> Self {
        let cpu_start = procs
            .iter()
            .filter_map(|p| Some((p.pid, cpu_ticks(p.pid)?)))
            .collect();
        let peaks: Arc<Mutex<HashMap<u32, f64>>> = Arc::default();
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        let sampler = {
            let peaks = peaks.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    for &pid in &pids {
                        if let Some(rss) = status_mib(pid, "VmRSS") {
                            let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                            let e = p.entry(pid).or_insert(0.0);
                            *e = e.max(rss);
                        }
                    }
                }
            })
        };
        Self {
            procs,
            started: Instant::now(),
            cpu_start,
            machine_start: machine_ticks(),
            peaks,
            sampler,
        }
    }

    /// Ends the window and reports per-process CPU and memory.
    pub fn finish(self) -> WindowReport {
        self.sampler.abort();
        let seconds = self.started.elapsed().as_secs_f64();
        let hz = ticks_per_second();
        let peaks = self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let processes = self
            .procs
            .iter()
            .map(|p| {
                let used = match (self.cpu_start.get(&p.pid), cpu_ticks(p.pid)) {
                    (Some(a), Some(b)) => b.saturating_sub(*a),
                    _ => 0,
                };
                let rss_end = status_mib(p.pid, "VmRSS").unwrap_or(0.0);
                Usage {
                    name: p.name.clone(),
                    pid: p.pid,
                    cpu_percent: used as f64 / hz / seconds.max(1e-9) * 100.0,
                    peak_rss_sampled_mib: peaks
                        .get(&p.pid)
                        .copied()
                        .unwrap_or(rss_end)
                        .max(rss_end),
                    vm_hwm_mib: if p.ours {
                        status_mib(p.pid, "VmHWM")
                    } else {
                        None
                    },
                    rss_end_mib: rss_end,
                }
            })
            .collect();
        let machine_busy_percent = match (self.machine_start, machine_ticks()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            }
            _ => None,
        };
        WindowReport {
            seconds,
            machine_busy_percent,
            processes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_cpu() {
        let me = std::process::id();
        assert!(status_mib(me, "VmRSS").is_some_and(|m| m > 0.0));
        assert!(status_mib(me, "VmHWM").is_some_and(|m| m > 0.0));
        assert!(cpu_ticks(me).is_some());
    }

    #[test]
    fn a_reset_peak_forgets_memory_given_back() {
        let me = std::process::id();
        // 64 MiB touched page by page, then returned to the system (large blocks are unmapped).
        let mut block = vec![0u8; 64 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        drop(block);
        let before = status_mib(me, "VmHWM").expect("VmHWM");

        assert!(reset_peak(me));

        let after = status_mib(me, "VmHWM").expect("VmHWM");
        assert!(after < before - 32.0, "VmHWM {before} MiB -> {after} MiB");
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
    }
}
