//! The load counters of every node, in one table: what a policy reads of
//! each candidate on every placement.
//!
//! A policy scanning a model's candidates reads a few counters of each. Kept
//! inside each node's [`NodeLive`](super::NodeLive), they were two pointers
//! away and scattered over the heap, so at 10,000 candidates nearly every
//! read missed the cache. Here every node has one cache line, [`NodeLoad`],
//! in chunks of adjacent lines: nodes that registered together sit side by
//! side, and a candidate list holds a plain reference to each line
//! ([`Candidate`](super::Candidate)), sorted by where the line is, so a scan
//! reads a compact table forward.
//!
//! Chunks are never returned to the allocator: a node's line goes back to a
//! free list when its `NodeLive` is dropped (no snapshot, candidate or
//! guard refers to it any more) and the next node reuses it. The table
//! therefore holds as many lines as the most nodes ever known at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Lines allocated at once when the free list is empty.
const CHUNK: usize = 256;

/// One node's load, one cache line (no two nodes' counters share one, so a
/// request starting on one node never slows a placement reading another).
#[derive(Debug)]
#[repr(align(64))]
pub struct NodeLoad {
    pub(super) in_flight: AtomicU64,
    /// The most requests in flight since the server's last load report (see
    /// [`NodeLive::record_server_load`](super::NodeLive::record_server_load)).
    pub(super) in_flight_peak: AtomicU64,
    /// Requests waiting in the router for a slot here (see `proxy`'s hold).
    pub(super) held: AtomicU64,
    /// Requests of other clients running and waiting on the node's server, as
    /// its last report told: what it counted less the most requests this
    /// router had in flight since the report before (0 when it reports
    /// nothing).
    pub(super) others_busy: AtomicU64,
    /// Requests the node runs at once (its OLLAMA_NUM_PARALLEL), 0 when unknown.
    pub(super) parallel: AtomicU32,
    cpu_percent_bits: AtomicU32,
    memory_percent_bits: AtomicU32,
    /// cpu% + memory% (f64 bits), summed once per heartbeat rather than on
    /// every placement.
    pressure_bits: AtomicU64,
    /// Out of rotation after failures (see the health state machine in
    /// [`NodeLive`](super::NodeLive)): read for every candidate of a request.
    pub(super) unhealthy: AtomicBool,
}

impl NodeLoad {
    const fn new() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            in_flight_peak: AtomicU64::new(0),
            held: AtomicU64::new(0),
            others_busy: AtomicU64::new(0),
            parallel: AtomicU32::new(0),
            cpu_percent_bits: AtomicU32::new(0),
            memory_percent_bits: AtomicU32::new(0),
            pressure_bits: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
        }
    }

    /// A line of its own, from the free list or a new chunk.
    pub(super) fn allocate() -> &'static NodeLoad {
        let mut free = FREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(line) = free.pop() {
            return line;
        }
        let chunk: &'static [NodeLoad] =
            Box::leak((0..CHUNK).map(|_| NodeLoad::new()).collect::<Box<[_]>>());
        // Handed out from the front, so nodes registered in a row are adjacent.
        free.extend(chunk[1..].iter().rev());
        &chunk[0]
    }

    /// Resets the line and returns it to the free list; its node is gone.
    pub(super) fn release(&'static self) {
        self.reset();
        FREE.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(self);
    }

    /// Back to what [`NodeLoad::new`] holds. Every field is named, so a
    /// field added later cannot be left out.
    fn reset(&self) {
        let NodeLoad {
            in_flight,
            in_flight_peak,
            held,
            others_busy,
            parallel,
            cpu_percent_bits,
            memory_percent_bits,
            pressure_bits,
            unhealthy,
        } = self;
        for counter in [in_flight, in_flight_peak, held, others_busy, pressure_bits] {
            counter.store(0, Ordering::Relaxed);
        }
        for counter in [parallel, cpu_percent_bits, memory_percent_bits] {
            counter.store(0, Ordering::Relaxed);
        }
        unhealthy.store(false, Ordering::Relaxed);
    }

    /// Whether the proxy avoids the node (it is then tried only as a last resort).
    pub fn unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The requests the node is busy with: this router's in flight, and those
    /// of other clients that its server last reported running and waiting.
    pub fn busy(&self) -> u64 {
        self.in_flight() + self.others_busy.load(Ordering::Relaxed)
    }

    /// What the policies weigh: [`busy`](Self::busy), plus the requests
    /// waiting in the router for a slot here.
    pub fn load(&self) -> u64 {
        self.busy() + self.held.load(Ordering::Relaxed)
    }

    /// Parallel request slots, when the node told us.
    pub fn parallel(&self) -> Option<u32> {
        let n = self.parallel.load(Ordering::Relaxed);
        (n > 0).then_some(n)
    }

    /// Whether a request sent now would wait for a slot: its [`load`](Self::load),
    /// other clients' requests included, fills every slot (one when unknown).
    pub fn would_queue(&self) -> bool {
        self.load() >= u64::from(self.parallel().unwrap_or(1))
    }

    /// Whether every slot is busy with this router's requests (known slots only).
    pub fn saturated(&self) -> bool {
        self.parallel()
            .is_some_and(|slots| self.in_flight() >= u64::from(slots))
    }

    pub fn cpu_percent(&self) -> f32 {
        f32::from_bits(self.cpu_percent_bits.load(Ordering::Relaxed))
    }

    pub fn memory_percent(&self) -> f32 {
        f32::from_bits(self.memory_percent_bits.load(Ordering::Relaxed))
    }

    /// CPU% + memory%, as the last heartbeat told.
    pub fn pressure(&self) -> f64 {
        f64::from_bits(self.pressure_bits.load(Ordering::Relaxed))
    }

    /// Stores a heartbeat's CPU and memory use (percent).
    pub(super) fn record_machine(&self, cpu_percent: f32, memory_percent: f32) {
        self.cpu_percent_bits
            .store(cpu_percent.to_bits(), Ordering::Relaxed);
        self.memory_percent_bits
            .store(memory_percent.to_bits(), Ordering::Relaxed);
        let pressure = f64::from(cpu_percent) + f64::from(memory_percent);
        self.pressure_bits
            .store(pressure.to_bits(), Ordering::Relaxed);
    }

    /// Stores what the server said of its load, as requests of other clients
    /// (see [`NodeLive::record_server_load`](super::NodeLive::record_server_load)).
    pub(super) fn record_others(&self, busy: Option<u64>) {
        let now = self.in_flight();
        let peak = self.in_flight_peak.swap(now, Ordering::Relaxed).max(now);
        let others = busy.map_or(0, |busy| busy.saturating_sub(peak));
        self.others_busy.store(others, Ordering::Relaxed);
    }
}

/// Lines whose node is gone, ready for the next.
static FREE: Mutex<Vec<&'static NodeLoad>> = Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_reset_before_it_is_reused() {
        let line = NodeLoad::allocate();
        line.in_flight.store(3, Ordering::Relaxed);
        line.parallel.store(4, Ordering::Relaxed);
        line.record_others(Some(9));
        assert_eq!((line.load(), line.parallel()), (9, Some(4)));
        // What `release` does before the line goes back to the free list
        // (where another test's node may take it at once).
        line.reset();
        assert_eq!((line.load(), line.busy(), line.parallel()), (0, 0, None));
        line.release();
    }

    #[test]
    fn lines_are_a_cache_line_each() {
        assert_eq!(std::mem::size_of::<NodeLoad>(), 64);
        let (a, b) = (NodeLoad::allocate(), NodeLoad::allocate());
        assert_ne!(std::ptr::from_ref(a), std::ptr::from_ref(b));
        a.release();
        b.release();
    }
}
