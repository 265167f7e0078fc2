//! Claims that keep an event from being expanded twice: a redelivery after a crash, a producer
//! resending a uuid, or two routers holding copies of one uuid at the same time. An event is
//! claimed with a short lease while its jobs are published, then marked expanded; a router that
//! dies holding a lease only delays the event until the lease runs out.

use std::time::Duration;

use super::{Store, StoreError};

/// Claims an event for expanding, atomically: `0` already expanded, `1` claimed (a lease set),
/// `2` another router holds the lease. KEYS: the event's hash, its lease; ARGV: lease ms.
const CLAIM_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'expanded') == 1 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 2
";

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

    /// Claims each of `uuids` (events of workspace `ws`) for `lease`, in one round trip.
    pub async fn claim_for_routing(
        &self,
        ws: &str,
        uuids: &[&str],
        lease: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut pipe = redis::pipe();
        for uuid in uuids {
            pipe.cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(2)
                .arg(self.event_key(ws, uuid))
                .arg(self.lease_key(ws, uuid))
                .arg(lease.as_millis() as u64);
        }
        let codes: Vec<i64> = pipe.query_async(&mut self.conn()).await?;
        Ok(codes
            .into_iter()
            .map(|code| match code {
                0 => Claim::Done,
                1 => Claim::Taken,
                _ => Claim::Contested,
            })
            .collect())
    }

    /// Marks events expanded (their jobs are confirmed by the broker) and drops their leases.
    pub async fn mark_expanded(&self, ws: &str, uuids: &[&str]) -> Result<(), StoreError> {
        if uuids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for uuid in uuids {
            pipe.hset(self.event_key(ws, uuid), "expanded", 1).ignore();
            pipe.del(self.lease_key(ws, uuid)).ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }
}
