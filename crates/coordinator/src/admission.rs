//! Admission: the caps on what clients may hold at once — requests in flight
//! (fleet-wide and per node) and request bytes buffered — each with a short
//! bounded wait when full, after which the client gets 503 with `Retry-After`.
//!
//! Taking and giving back capacity is a compare-and-swap and a subtraction on
//! atomics; the waiters' [`Notify`] is touched only while someone waits, so a
//! coordinator under its caps never takes a lock here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// "Something was given back": wakes the tasks waiting for room, and costs one
/// atomic load when nobody waits.
#[derive(Debug)]
pub struct Signal {
    waiting: AtomicUsize,
    notify: Notify,
}

impl Signal {
    pub const fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            notify: Notify::const_new(),
        }
    }

    /// Tells the waiters to look again.
    pub fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits for the next notification, or until `deadline`.
    pub async fn next(&self, deadline: Instant) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let _ = tokio::time::timeout_at(deadline, self.notify.notified()).await;
    }

    /// Calls `try_now` until it returns `Some`, after each notification, until `deadline`.
    pub async fn wait_for<T>(
        &self,
        deadline: Instant,
        mut try_now: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            // Created before the check: a notification between the two is not lost.
            let notified = self.notify.notified();
            if let Some(found) = try_now() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return try_now();
            }
        }
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A counted capacity (requests, bytes): taken in amounts, given back when the
/// [`GateHold`] drops.
#[derive(Debug)]
pub struct Gate {
    used: AtomicUsize,
    capacity: usize,
    freed: Signal,
}

impl Gate {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            capacity,
            freed: Signal::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What is taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// `amount` of the capacity if it is free now.
    pub fn try_take(self: &Arc<Self>, amount: usize) -> Option<GateHold> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.checked_add(amount).filter(|&a| a <= self.capacity)?;
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(GateHold {
                        gate: Arc::clone(self),
                        amount,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// `amount` of the capacity, waiting at most `wait` for it to be free.
    pub async fn take(self: &Arc<Self>, amount: usize, wait: Duration) -> Option<GateHold> {
        if let Some(hold) = self.try_take(amount) {
            return Some(hold);
        }
        if amount > self.capacity || wait.is_zero() {
            return None;
        }
        self.freed
            .wait_for(Instant::now() + wait, || self.try_take(amount))
            .await
    }
}

/// Capacity taken from a [`Gate`]; given back on drop.
#[derive(Debug)]
pub struct GateHold {
    gate: Arc<Gate>,
    amount: usize,
}

impl GateHold {
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Takes `more` into this hold, waiting at most `wait` for it.
    pub async fn grow(&mut self, more: usize, wait: Duration) -> bool {
        match self.gate.take(more, wait).await {
            Some(extra) => {
                self.amount += extra.amount;
                std::mem::forget(extra);
                true
            }
            None => false,
        }
    }
}

impl Drop for GateHold {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.gate.used.fetch_sub(self.amount, Ordering::SeqCst);
            self.gate.freed.notify();
        }
    }
}

/// What an admitted inference request holds until its answer ends: its place
/// among the requests in flight. (The bytes its body takes are held by the
/// body itself, for as long as any copy of it lives.)
#[derive(Debug, Default)]
pub struct Admission {
    pub in_flight: Option<GateHold>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_gives_out_no_more_than_its_capacity_and_takes_back_on_drop() {
        let gate = Gate::new(10);
        let a = gate.try_take(6).unwrap();
        assert!(gate.try_take(5).is_none());
        let b = gate.try_take(4).unwrap();
        assert_eq!(gate.used(), 10);
        drop(a);
        assert_eq!(gate.used(), 4);
        assert!(gate.try_take(6).is_some());
        drop(b);
        assert_eq!(gate.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_room_as_soon_as_it_is_given_back() {
        let gate = Gate::new(1);
        let held = gate.try_take(1).unwrap();
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.take(1, Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_deadline() {
        let gate = Gate::new(1);
        let _held = gate.try_take(1).unwrap();
        let started = Instant::now();
        assert!(gate.take(1, Duration::from_secs(2)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // More than the whole capacity is refused without a wait.
        let started = Instant::now();
        assert!(gate.take(2, Duration::from_secs(2)).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_grows_while_there_is_room() {
        let gate = Gate::new(10);
        let mut hold = gate.try_take(4).unwrap();
        assert!(hold.grow(6, Duration::ZERO).await);
        assert_eq!(hold.amount(), 10);
        assert!(!hold.grow(1, Duration::from_millis(10)).await);
        drop(hold);
        assert_eq!(gate.used(), 0);
    }
}
