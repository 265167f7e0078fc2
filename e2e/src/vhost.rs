//! A RabbitMQ vhost of its own, so that queues and their contents never meet another run's.

use std::process::Command;

use anyhow::{bail, Context};

/// The broker every test and load run talks to, without a vhost.
pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (is RabbitMQ installed on this machine?)")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A vhost that `guest` may use fully; deleted on drop (also when a test fails).
pub struct Vhost {
    /// Its name.
    pub name: String,
}

impl Vhost {
    /// A vhost with a fresh random name, for one test.
    pub fn new() -> Self {
        Self::create(crate::random_name()).expect("a vhost of the test's own")
    }

    /// Adds the vhost `name` and gives `guest` every permission on it.
    pub fn create(name: String) -> anyhow::Result<Self> {
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// The broker URL of this vhost, on the broker at `base` (e.g. [`AMQP_BASE`]).
    pub fn amqp_url(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.name)
    }
}

impl Default for Vhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("warning: could not delete vhost {}: {e:#}", self.name);
        }
    }
}
