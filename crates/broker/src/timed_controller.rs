//! The controller behind its lock, timed: every operation, forwarded op, registration,
//! heartbeat or AlterPartition, waits for the one lock and then runs under it, as Kafka's
//! controller runs events from one queue. The wait and the run are what Kafka exports as
//! `EventQueueTimeMs` and `EventQueueProcessingTimeMs`.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use gregor_metadata::Controller;

use crate::metrics::ControllerTimes;

pub struct TimedController {
    controller: Mutex<Controller>,
    times: ControllerTimes,
}

/// The controller, locked; dropping it records how long it was held.
pub struct Locked<'a> {
    guard: MutexGuard<'a, Controller>,
    since: Instant,
    times: &'a ControllerTimes,
}

impl TimedController {
    pub fn new(controller: Controller, times: ControllerTimes) -> TimedController {
        TimedController {
            controller: Mutex::new(controller),
            times,
        }
    }

    /// Waits for the controller (the wait is its queue time).
    pub fn lock(&self) -> Locked<'_> {
        let asked = Instant::now();
        let guard = self.controller.lock().expect("controller lock poisoned");
        let since = Instant::now();
        self.times.queued(since - asked);
        Locked {
            guard,
            since,
            times: &self.times,
        }
    }
}

impl Deref for Locked<'_> {
    type Target = Controller;
    fn deref(&self) -> &Controller {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Controller {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.times.processed(self.since.elapsed());
    }
}
