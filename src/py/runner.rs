//! Runs a long Rust loop with the GIL released, while letting Python see Ctrl-C and progress.
//! Every `TICK` the loop calls back: we re-attach briefly, run pending signal handlers (so Ctrl-C in a
//! terminal or a notebook, and SIGTERM through the CLI's handler, stop the loop cleanly) and, at most
//! once per `progress_every`, hand the stats to the user's callback.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::error::{Error, Result};

pub struct Runner {
    progress: Option<Py<PyAny>>,
    progress_every: Duration,
    last_progress: Option<Instant>,
    /// An exception raised by the callback (other than KeyboardInterrupt), re-raised after the loop.
    pub failure: Option<PyErr>,
}

impl Runner {
    pub fn new(progress: Option<Py<PyAny>>, progress_every: Duration) -> Self {
        Runner {
            progress,
            progress_every,
            last_progress: None,
            failure: None,
        }
    }

    /// Called from inside `py.detach`: re-attaches, checks signals, maybe reports progress.
    /// `Error::Interrupted` stops the stage (after its batch in flight).
    pub fn tick(&mut self, stats: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) -> Result<()> {
        Python::attach(|py| {
            // A log line from the loop goes through Python's logging; a Ctrl-C that landed in it is left
            // pending there (pyo3-log cannot return it): take it now, like one from check_signals.
            let mut outcome = match PyErr::take(py) {
                Some(e) => Err(e),
                None => py.check_signals(),
            };
            if outcome.is_ok() {
                if let Some(cb) = &self.progress {
                    let due = self
                        .last_progress
                        .is_none_or(|t| t.elapsed() >= self.progress_every);
                    if due {
                        self.last_progress = Some(Instant::now());
                        outcome = stats(py).and_then(|s| cb.call1(py, (s,)).map(|_| ()));
                    }
                }
            }
            match outcome {
                Ok(()) => Ok(()),
                Err(e) => {
                    if !e.is_instance_of::<PyKeyboardInterrupt>(py) {
                        self.failure = Some(e);
                    }
                    Err(Error::Interrupted)
                }
            }
        })
    }

    /// The final report (when the stage succeeded), so callers see the end state even on short runs.
    pub fn finish(
        &mut self,
        stats: Option<impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>>,
    ) -> PyResult<()> {
        Python::attach(|py| {
            // A Ctrl-C left pending by a last log line: the stage has finished anyway.
            if let Some(e) = PyErr::take(py) {
                if !e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    return Err(e);
                }
            }
            if let (Some(cb), Some(stats)) = (&self.progress, stats) {
                cb.call1(py, (stats(py)?,))?;
            }
            Ok(())
        })
    }
}
