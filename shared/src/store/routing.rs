//! Claims that keep an event from being expanded twice: a redelivery after a crash, a producer
//! resending a uuid, or two routers holding copies of one uuid at the same time. An event is
//! claimed with a short lease while its jobs are published, then marked expanded; a router that
//! dies holding a lease only delays the event until the lease runs out.
//!
//! The claim is the time of expansion written in the event's history record, so it costs no
//! key of its own and counts for `HERALD_DEDUP_WINDOW`. A window longer than the retention
//! (which trims the record) keeps a claim key `idem:{uuid}` for the window as well.

use std::time::Duration;

use super::{Store, StoreError};

/// Where an event stands for a router that wants to expand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Expanded already: nothing to do.
    Done,
    /// This router holds the lease: expand it, then [`Store::mark_expanded`].
    Taken,
    /// Another router is expanding it right now: look again later.
    Contested,
}

impl Store {
    /// The lease is a key of its own kind: a producer's uuid is always the last part of a
    /// key, so no uuid (which may contain `:`) can spell another event's lease.
    fn lease_key(&self, ws: &str, uuid: &str) -> String {
        self.ws_key(ws, &format!("lease:{uuid}"))
    }

    /// The claim of a uuid kept past the retention, when `HERALD_DEDUP_WINDOW` is longer.
    fn idem_key(&self, ws: &str, uuid: &str) -> String {
        self.ws_key(ws, &format!("idem:{uuid}"))
    }

    /// Claims each of `uuids` (events of workspace `ws`) for `lease`, in one round trip.
    pub async fn claim_for_routing(
        &self,
        ws: &str,
        uuids: &[&str],
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = super::script(super::ScriptName::Claim);
        call.key(self.history_key(ws));
        for uuid in uuids {
            call.key(self.lease_key(ws, uuid))
                .key(self.idem_key(ws, uuid))
                .key(self.legacy_event_key(ws, uuid));
        }
        call.arg(lease.as_millis() as u64)
            .arg(crate::now_ms())
            .arg(self.dedup_window.as_millis() as u64);
        for uuid in uuids {
            call.arg(*uuid);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&call);
        let (codes,): (Vec<i64>,) = self.query(&pipe).await?;
        Ok(codes
            .into_iter()
            .map(|code| match code {
                0 => Claim::Done,
                1 => Claim::Taken,
                _ => Claim::Contested,
            })
            .collect())
    }

    /// Drops the leases of events this router claimed but could not expand (Redis or the broker
    /// failed part-way), so the next try takes them at once instead of after the lease.
    pub async fn release_claims(&self, ws: &str, uuids: &[&str]) -> Result<(), StoreError> {
        if uuids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for uuid in uuids {
            pipe.del(self.lease_key(ws, uuid)).ignore();
        }
        let _: () = self.query(&pipe).await?;
        Ok(())
    }

    /// Marks events expanded (their jobs are confirmed by the broker) and drops their leases.
    pub async fn mark_expanded(&self, ws: &str, uuids: &[&str]) -> Result<(), StoreError> {
        if uuids.is_empty() {
            return Ok(());
        }
        let now = crate::now_ms();
        // Past the retention the record is trimmed, and the claim with it: a longer window
        // keeps a key of its own, which expires with the window.
        let keep_claim = self.dedup_window > self.retention;
        let mut call = super::script(super::ScriptName::Expanded);
        call.key(self.history_key(ws)).key(self.log_key(ws));
        for uuid in uuids {
            call.key(self.lease_key(ws, uuid));
        }
        call.arg(now).arg(now - super::history::INDEX_FLOOR_MS);
        for uuid in uuids {
            call.arg(*uuid);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&call).ignore();
        if keep_claim {
            for uuid in uuids {
                pipe.pset_ex(
                    self.idem_key(ws, uuid),
                    1,
                    self.dedup_window.as_millis() as u64,
                )
                .ignore();
            }
        }
        self.run(&pipe).await
    }
}
