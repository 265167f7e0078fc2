//! Bytes in flight: a consumer's bound on the message bodies it handles at once, beside the
//! prefetch's bound on their number. A prefetch of 64 means 64 small messages or 64 bulk ones
//! of 500 events; what a handler allocates grows with the body, so only a bound in bytes keeps
//! a consumer's memory flat whatever its producers send.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget of body bytes shared by a consumer's handlers. Each message takes its length from
/// it before its handler starts and gives it back once the message is settled.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    capacity: u32,
    permits: Arc<Semaphore>,
}

/// The bytes a message holds of a [`ByteBudget`] until it is dropped.
#[derive(Debug)]
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ByteBudget {
    /// A budget of `bytes` (at least 1, at most 4 GiB - 1).
    pub fn new(bytes: usize) -> Self {
        let capacity = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        Self {
            capacity,
            permits: Arc::new(Semaphore::new(capacity as usize)),
        }
    }

    /// The whole budget.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// What is not taken right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until a body of `len` bytes fits, then holds its bytes. A body larger than the
    /// whole budget takes all of it: it waits until nothing else is in flight and then runs
    /// alone, rather than never. Waiters are served in order, so a large body is not starved
    /// by a stream of small ones.
    pub async fn take(&self, len: usize) -> Held {
        let wanted = u32::try_from(len).map_or(self.capacity, |l| l.min(self.capacity));
        // The semaphore is never closed, so acquiring fails only if it were; the message then
        // runs unbounded rather than not at all.
        Held {
            _permit: self.permits.clone().acquire_many_owned(wanted).await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_body_larger_than_the_budget_runs_alone_and_gives_the_budget_back() {
        let budget = ByteBudget::new(1_000);
        let small = budget.take(300).await;
        let mut big = Box::pin(budget.take(50_000));
        assert!(
            (&mut big).now_or_never().is_none(),
            "waits while another body is in flight"
        );
        drop(small);
        let big = big.now_or_never().expect("runs once alone");
        assert_eq!(budget.available(), 0, "it holds the whole budget");
        assert!(budget.take(1).now_or_never().is_none());
        drop(big);
        assert_eq!(budget.available(), budget.capacity());
    }

    #[tokio::test]
    async fn bodies_wait_for_room_and_are_served_in_order() {
        let budget = ByteBudget::new(1_000);
        let first = budget.take(600).await;
        let mut second = Box::pin(budget.take(600));
        let mut third = Box::pin(budget.take(100));
        assert!((&mut second).now_or_never().is_none(), "no room for 600");
        assert!(
            (&mut third).now_or_never().is_none(),
            "a small body does not pass the larger one waiting before it"
        );
        drop(first);
        let second = second.now_or_never().expect("room now");
        let third = third.now_or_never().expect("room for both");
        assert_eq!(budget.available(), 300);
        drop((second, third));
        assert_eq!(budget.available(), 1_000);
    }

    #[test]
    fn an_empty_or_huge_budget_is_clamped() {
        assert_eq!(ByteBudget::new(0).capacity(), 1);
        assert_eq!(ByteBudget::new(usize::MAX).capacity(), u32::MAX as usize);
    }
}
