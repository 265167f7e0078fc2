//! The local Redis Cluster the cluster tests run against: three masters and their replicas on
//! ports 7000-7005, started by `deploy/services.sh cluster` (`deploy/redis-cluster.sh`).
//! Tests find its nodes, kill one, promote a replica, and start the cluster's missing nodes
//! again through the same script.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// Seed nodes for `HERALD_REDIS_URL` with `HERALD_REDIS_MODE=cluster`.
pub const SEEDS: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

/// Every port of the local cluster.
pub const PORTS: std::ops::RangeInclusive<u16> = 7000..=7005;

/// One node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// The master it replicates, for a replica.
    pub master_id: Option<String>,
    /// Seen as failing, or not connected.
    pub down: bool,
    /// A master serving at least one slot.
    pub has_slots: bool,
    /// The slot ranges it serves, first and last slot of each.
    pub slots: Vec<(u16, u16)>,
}

impl Node {
    /// True when this node serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }
}

fn connection(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let c = client.get_connection_with_timeout(Duration::from_secs(1))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

/// A command to the node on `port`.
pub fn command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> anyhow::Result<T> {
    let mut c = connection(port)?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query(&mut c)?)
}

/// True when some node of the local cluster answers and sees the cluster as ok.
pub fn is_up() -> bool {
    PORTS.into_iter().any(|port| {
        command::<String>(port, &["CLUSTER", "INFO"])
            .is_ok_and(|info| info.contains("cluster_state:ok"))
    })
}

/// The seed nodes when the local cluster is up. When it is not: in CI (`CI=true`) the test
/// fails, elsewhere it is skipped with a message saying how to start the cluster.
pub fn seeds_or_skip(test: &str) -> Option<&'static str> {
    if is_up() {
        return Some(SEEDS);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: the Redis Cluster on 127.0.0.1:7000-7005 is not running (CI=true)");
    }
    eprintln!(
        "skipping {test}: no Redis Cluster on 127.0.0.1:7000-7005; \
         start one with `deploy/services.sh cluster`"
    );
    None
}

/// The cluster's nodes as the first answering node of `ports` sees them.
pub fn nodes_seen_from(ports: impl IntoIterator<Item = u16>) -> anyhow::Result<Vec<Node>> {
    for port in ports {
        let Ok(text) = command::<String>(port, &["CLUSTER", "NODES"]) else {
            continue;
        };
        return text.lines().map(parse_node).collect();
    }
    bail!("no cluster node answers")
}

/// The cluster's nodes.
pub fn nodes() -> anyhow::Result<Vec<Node>> {
    nodes_seen_from(PORTS)
}

/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...`
fn parse_node(line: &str) -> anyhow::Result<Node> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        bail!("unexpected CLUSTER NODES line: {line}");
    }
    let port = f[1]
        .split(['@', ','])
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {line}"))?;
    let flags: Vec<&str> = f[2].split(',').collect();
    Ok(Node {
        id: f[0].to_string(),
        port,
        master: flags.contains(&"master"),
        master_id: (f[3] != "-").then(|| f[3].to_string()),
        down: flags.iter().any(|x| x.starts_with("fail")) || f[7] != "connected",
        has_slots: f.len() > 8,
        // `[slot->-node]` entries are slots being migrated: not served here yet.
        slots: f[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect(),
    })
}

/// The masters serving slots whose Redis answers at `url`'s cluster (the ports of every node
/// to scan for a prefix's keys); empty when `url` is not a cluster node.
pub fn masters_of(url: &str) -> anyhow::Result<Vec<u16>> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut c)?;
    if !info.contains("cluster_enabled:1") {
        return Ok(Vec::new());
    }
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c)?;
    Ok(text
        .lines()
        .map(parse_node)
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .filter(|n| n.master && n.has_slots && !n.down)
        .map(|n| n.port)
        .collect())
}

/// The slot of `key` (its hash tag's, if it has one), as the cluster computes it.
pub fn slot_of(key: &str) -> u16 {
    redis::cluster_routing::get_slot(key.as_bytes())
}

/// Whether the node on `port` is a master now (`ROLE`).
pub fn is_master(port: u16) -> bool {
    command::<Vec<redis::Value>>(port, &["ROLE"])
        .ok()
        .and_then(|r| r.into_iter().next())
        .is_some_and(|role| matches!(role, redis::Value::BulkString(b) if b == b"master"))
}

/// SIGKILLs the Redis on `port` (its pid as it reports it).
pub fn kill(port: u16) -> anyhow::Result<()> {
    let info: String = command(port, &["INFO", "server"])?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(str::trim)
        .context("no process_id")?
        .to_string();
    let status = Command::new("kill").args(["-KILL", &pid]).status()?;
    if !status.success() {
        bail!("kill -KILL {pid} failed");
    }
    Ok(())
}

/// Starts every node of the local cluster that is down and waits until the cluster is ok
/// (`deploy/redis-cluster.sh`, which leaves running nodes alone).
pub fn restore() -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis-cluster.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let master = parse_node(
            "d9d4 127.0.0.1:7000@17000 myself,master - 0 1796104988000 1 connected 0-5460",
        )
        .expect("master");
        assert!(master.master && master.has_slots && !master.down);
        assert_eq!(master.port, 7000);
        assert!(master.serves(0) && master.serves(5460) && !master.serves(5461));
        let replica =
            parse_node("29f8 127.0.0.1:7004@17004 slave d9d4 0 1796104988000 1 connected")
                .expect("replica");
        assert!(!replica.master && !replica.has_slots);
        assert_eq!(replica.master_id.as_deref(), Some("d9d4"));
        let failed = parse_node(
            "da1e 127.0.0.1:7001@17001 master,fail - 1796 1796 2 disconnected 5461-10922",
        )
        .expect("failed");
        assert!(failed.down);
    }
}
