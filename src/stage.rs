//! What every stage shares: the token that tells it to finish, the worker threads with their merged
//! stats and once-a-tick report, and the activity shown in status lines.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a running stage reports (and sees Ctrl-C).
pub const TICK: Duration = Duration::from_millis(100);

/// How long every worker must have been caught up before a drain finishes (over three times the
/// consumers' `fetch.wait.max.ms`, so records written before the drain began have arrived).
const CAUGHT_UP_FOR: Duration = Duration::from_millis(350);

/// Tells a running stage how to finish; shared between its caller and its workers.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicU8>);

const RUN: u8 = 0;
const DRAIN: u8 = 1;
/// Drained: finishing, not interrupted.
const DONE: u8 = 2;
const STOP: u8 = 3;

impl StopToken {
    pub fn new() -> Self {
        StopToken::default()
    }

    /// Finish the batch in flight, commit, return.
    pub fn stop(&self) {
        self.0.store(STOP, Ordering::Relaxed);
    }

    /// Keep going until every assigned partition has been read to its end (as it is when that
    /// happens), then commit and return. A stop overrides it.
    pub fn drain(&self) {
        let _ = self
            .0
            .compare_exchange(RUN, DRAIN, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The drain is complete: every worker finishes its batch and returns (not an interruption).
    fn done(&self) {
        let _ = self
            .0
            .compare_exchange(DRAIN, DONE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Finish now (the stage went idle): not an interruption; a stop stays a stop.
    fn finish(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s < DONE).then_some(DONE)
            });
    }

    /// Time to finish (stopped, or drained).
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= DONE
    }

    /// Stopped by the caller (Ctrl-C, a failure elsewhere), as opposed to drained.
    pub fn is_interrupted(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOP
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed) == DRAIN
    }

    /// Sleeps until `due` in slices of a tick at most; a stop ends the sleep.
    pub fn sleep_until(&self, due: Instant) {
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() || self.is_stopped() {
                return;
            }
            std::thread::sleep(left.min(TICK));
        }
    }
}

/// When paced events are due: one per interval, keeping to the schedule (a late one is followed by
/// quicker ones) but never more than a second behind it (no burst to catch up after a stall).
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    next: Instant,
}

impl Schedule {
    /// Starting now; None for a zero interval (not paced).
    pub fn every(interval: Duration) -> Option<Self> {
        (!interval.is_zero()).then(|| Schedule {
            interval,
            next: Instant::now(),
        })
    }

    /// When the next event is due.
    pub fn next_due(&mut self) -> Instant {
        let due = self.next;
        self.next += self.interval;
        if let Some(floor) = Instant::now().checked_sub(Duration::from_secs(1)) {
            self.next = self.next.max(floor);
        }
        due
    }
}

/// What a stage is doing right now. Workers' activities merge to the most telling one (the greatest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Activity {
    #[default]
    Starting,
    Running,
    /// Inside a database transaction (a stage stuck here waits on the database: a lock, a slow disk).
    Writing,
    JoiningGroup,
    WaitingForDatabase,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Starting => "starting",
            Activity::Running => "running",
            Activity::Writing => "writing a batch to the database",
            Activity::JoiningGroup => "joining the consumer group",
            Activity::WaitingForDatabase => "waiting for the database",
        }
    }
}

/// How long a worker has had no input, for the stage's idle exit (decided for all workers at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet {
    /// The worker has partitions (one without is joining or has none to get).
    pub assigned: bool,
    /// The last input (or the worker's start); None: not tracked yet.
    pub since: Option<Instant>,
    /// The broker is unreachable: records may be waiting, so this is not idleness.
    pub broker_down: bool,
}

/// What every worker's stats hold for the harness, which merges and finishes it (the stages only add up
/// their own counters): how long the stage ran, whether it was interrupted, what it is doing, whether the
/// worker has read its input to the end, and how long it has had none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub elapsed: Duration,
    pub interrupted: bool,
    pub activity: Activity,
    /// This worker has read every assigned partition to its end (a drain completes when all have).
    pub caught_up: bool,
    /// This worker's input activity, for `until_idle`.
    pub quiet: Quiet,
}

impl Run {
    fn merge(&mut self, other: &Run) {
        self.interrupted |= other.interrupted;
        self.activity = self.activity.max(other.activity);
        self.quiet.broker_down |= other.quiet.broker_down;
    }
}

/// A stage's counters: workers' copies add up to the stage's.
pub trait Stats: Default + Clone + Send {
    /// Adds another worker's counters (the harness merges their `Run`).
    fn add(&mut self, other: &Self);
    fn run(&self) -> &Run;
    fn run_mut(&mut self) -> &mut Run;
}

/// Whether a stage whose workers report `quiet` has been idle for `idle`: every worker with partitions
/// had no input for that long (workers without any do not hold the stage up, unless none has any: then
/// a generous bound, as a group join can take that long), and the broker is reachable.
pub fn all_idle(quiet: &[Quiet], idle: Duration) -> bool {
    let waited = |q: &Quiet| q.since.map(|t| t.elapsed());
    if quiet.is_empty() || quiet.iter().any(|q| q.broker_down || q.since.is_none()) {
        return false;
    }
    if quiet.iter().any(|q| q.assigned) {
        quiet
            .iter()
            .filter(|q| q.assigned)
            .all(|q| waited(q).is_some_and(|w| w >= idle))
    } else {
        quiet
            .iter()
            .all(|q| waited(q).is_some_and(|w| w >= idle + Duration::from_secs(60)))
    }
}

pub fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `workers` copies of `work` in threads named `ecomlogs-<name>-<i>`. Every `TICK` the merged
/// stats go to `tick`; `tick` returning `Error::Interrupted` stops every worker after its batch in
/// flight (any other error stops them too, and is returned). One worker's failure stops the others; a
/// panic is reported as the bug it is.
pub fn run_workers<S: Stats>(
    name: &str,
    workers: usize,
    until_idle: Option<Duration>,
    token: &StopToken,
    tick: &mut dyn FnMut(&S) -> Result<()>,
    work: &(dyn Fn(usize, &Mutex<S>) -> Result<()> + Sync),
) -> Result<S> {
    let shared: Vec<Mutex<S>> = (0..workers.max(1))
        .map(|_| Mutex::new(S::default()))
        .collect();
    let start = Instant::now();
    let total = |interrupted: bool| {
        let mut t = S::default();
        for s in &shared {
            let s = locked(s);
            t.add(&s);
            t.run_mut().merge(s.run());
        }
        let run = t.run_mut();
        run.elapsed = start.elapsed();
        run.interrupted |= interrupted;
        t
    };
    let mut watch = Supervisor::new(name, token, until_idle);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shared
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                std::thread::Builder::new()
                    .name(format!("ecomlogs-{name}-{i}"))
                    .spawn_scoped(scope, move || guarded(name, token, || work(i, cell)))
                    .map_err(Error::Io)
            })
            .collect();
        if handles.iter().any(|h| h.is_err()) {
            token.stop();
        }
        while handles
            .iter()
            .any(|h| h.as_ref().is_ok_and(|h| !h.is_finished()))
        {
            std::thread::sleep(TICK);
            watch.drain(&shared);
            watch.tick(tick, &total(false));
        }
        handles
            .into_iter()
            .map(|h| {
                h.and_then(|h| {
                    h.join()
                        .unwrap_or_else(|panic| Err(Error::Internal(panic_message(name, &*panic))))
                })
            })
            .collect()
    });
    if let Some(e) = watch.tick_error {
        return Err(e);
    }
    // The first real failure wins over the stops it caused.
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }
    Ok(total(watch.interrupted))
}

/// Runs one worker: a failure or a panic (reported as the bug it is) stops the others too.
fn guarded(name: &str, token: &StopToken, work: impl FnOnce() -> Result<()>) -> Result<()> {
    let r = std::panic::catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|panic| Err(Error::Internal(panic_message(name, &*panic))));
    if r.is_err() {
        token.stop();
    }
    r
}

/// The stage's side of its workers: reports each tick, and decides when a drain is complete.
struct Supervisor<'a> {
    name: &'a str,
    token: &'a StopToken,
    until_idle: Option<Duration>,
    caught_up_since: Option<Instant>,
    interrupted: bool,
    tick_error: Option<Error>,
}

impl<'a> Supervisor<'a> {
    fn new(name: &'a str, token: &'a StopToken, until_idle: Option<Duration>) -> Self {
        Supervisor {
            name,
            token,
            until_idle,
            caught_up_since: None,
            interrupted: false,
            tick_error: None,
        }
    }

    /// A drain is decided for the stage as a whole: workers that caught up one by one and left the
    /// group would hand their partitions to the others (a rebalance each). An end-of-partition seen just
    /// before the last records were written is stale: the state must hold for a while (longer than a
    /// fetch waits at the end) before it counts.
    fn drain<S: Stats>(&mut self, shared: &[Mutex<S>]) {
        if let Some(idle) = self.until_idle {
            let quiet: Vec<Quiet> = shared.iter().map(|s| locked(s).run().quiet).collect();
            if !self.token.is_stopped() && all_idle(&quiet, idle) {
                log::info!(target: "ecomlogs.stage", "{}: no input for {:.1}s: finishing", self.name, idle.as_secs_f64());
                self.token.finish();
                return;
            }
        }
        if !(self.token.is_draining() && shared.iter().all(|s| locked(s).run().caught_up)) {
            self.caught_up_since = None;
            return;
        }
        let since = *self.caught_up_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= CAUGHT_UP_FOR {
            log::info!(target: "ecomlogs.stage", "{}: caught up with every assigned partition: finishing", self.name);
            self.token.done();
        }
    }

    /// Reports; `Error::Interrupted` (or any error) from the caller stops every worker.
    fn tick<S>(&mut self, tick: &mut dyn FnMut(&S) -> Result<()>, stats: &S) {
        if self.tick_error.is_some() || self.interrupted {
            return;
        }
        match tick(stats) {
            Ok(()) => return,
            Err(Error::Interrupted) => self.interrupted = true,
            Err(e) => self.tick_error = Some(e),
        }
        self.token.stop();
    }
}

fn panic_message(name: &str, panic: &(dyn Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("a {name} worker panicked: {what} (a bug in ecomlogs; please report it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_keeps_its_pace_and_stays_at_most_a_second_behind() {
        assert!(Schedule::every(Duration::ZERO).is_none());
        let tenth = Duration::from_millis(100);
        let mut s = Schedule::every(tenth).unwrap();
        let first = s.next_due();
        assert_eq!(s.next_due() - first, tenth);
        assert_eq!(s.next_due() - first, tenth * 2);
        // After a five-second stall: what is overdue goes at once, but only a second's worth.
        s.next = Instant::now() - Duration::from_secs(5);
        s.next_due();
        assert!(s.next_due() >= Instant::now() - Duration::from_secs(1) - tenth);
        // A stop ends a wait for the next turn.
        let token = StopToken::new();
        token.stop();
        let t = Instant::now();
        token.sleep_until(t + Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[derive(Default, Clone, Debug)]
    struct Count {
        n: u64,
        run: Run,
    }

    impl Stats for Count {
        fn add(&mut self, other: &Self) {
            self.n += other.n;
        }
        fn run(&self) -> &Run {
            &self.run
        }
        fn run_mut(&mut self) -> &mut Run {
            &mut self.run
        }
    }

    #[test]
    fn workers_stats_add_up_and_a_stop_reaches_every_worker() {
        let token = StopToken::new();
        let mut ticks = 0;
        let mut tick = |c: &Count| {
            ticks += 1;
            if c.n >= 3 {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        };
        let work = |_: usize, cell: &Mutex<Count>| {
            locked(cell).n += 1;
            while !token.is_stopped() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        };
        let out = run_workers("test", 3, None, &token, &mut tick, &work).unwrap();
        assert_eq!(out.n, 3);
        assert!(out.run.interrupted && ticks >= 1);
    }

    #[test]
    fn a_panic_is_reported_as_an_internal_error_and_stops_the_rest() {
        let token = StopToken::new();
        let work = |i: usize, _: &Mutex<Count>| {
            if i == 1 {
                panic!("boom");
            }
            while !token.is_stopped() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        };
        let err = run_workers("test", 2, None, &token, &mut |_: &Count| Ok(()), &work).unwrap_err();
        assert!(
            matches!(&err, Error::Internal(m) if m.contains("boom")),
            "{err}"
        );
    }

    #[test]
    fn idle_is_decided_for_all_workers_with_partitions() {
        let ago = |s: u64| Some(Instant::now() - Duration::from_secs(s));
        let q = |assigned, since, broker_down| Quiet {
            assigned,
            since,
            broker_down,
        };
        let idle = Duration::from_secs(3);
        assert!(all_idle(
            &[q(true, ago(5), false), q(true, ago(4), false)],
            idle
        ));
        assert!(!all_idle(
            &[q(true, ago(5), false), q(true, ago(1), false)],
            idle
        ));
        // A worker without partitions does not hold the others up ...
        assert!(all_idle(
            &[q(true, ago(5), false), q(false, ago(1), false)],
            idle
        ));
        // ... but with none assigned anywhere the stage is still joining.
        assert!(!all_idle(&[q(false, ago(5), false)], idle));
        assert!(all_idle(&[q(false, ago(64), false)], idle));
        assert!(!all_idle(&[q(true, ago(5), true)], idle));
        assert!(!all_idle(&[q(true, None, false)], idle));
    }

    #[test]
    fn an_idle_finish_is_no_interruption_and_does_not_undo_a_stop() {
        let t = StopToken::new();
        t.finish();
        assert!(t.is_stopped() && !t.is_interrupted());
        let t = StopToken::new();
        t.stop();
        t.finish();
        assert!(t.is_interrupted());
    }

    #[test]
    fn drain_does_not_undo_a_stop() {
        let t = StopToken::new();
        t.drain();
        assert!(t.is_draining() && !t.is_stopped());
        t.stop();
        t.drain();
        assert!(t.is_stopped() && t.is_interrupted() && !t.is_draining());
    }

    #[test]
    fn a_drain_finishes_once_every_worker_caught_up_and_is_no_interruption() {
        #[derive(Default, Clone)]
        struct Reader {
            run: Run,
        }
        impl Stats for Reader {
            fn add(&mut self, _: &Self) {}
            fn run(&self) -> &Run {
                &self.run
            }
            fn run_mut(&mut self) -> &mut Run {
                &mut self.run
            }
        }
        let token = StopToken::new();
        token.drain();
        let work = |i: usize, cell: &Mutex<Reader>| {
            std::thread::sleep(Duration::from_millis(50 * i as u64));
            locked(cell).run.caught_up = true;
            while !token.is_stopped() {
                std::thread::sleep(Duration::from_millis(5));
            }
            locked(cell).run.interrupted = token.is_interrupted();
            Ok(())
        };
        let out = run_workers("test", 3, None, &token, &mut |_: &Reader| Ok(()), &work).unwrap();
        assert!(!out.run.interrupted && token.is_stopped());
    }
}
