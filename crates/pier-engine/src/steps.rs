//! A small step runner for multi-step work with an undo per step (a saga, as omicron's
//! sagas, in one process): the steps run in order; when one fails, the ones done are
//! undone in reverse order and the first error is returned. Undo never fails (it logs
//! what it could not do): what it leaves is for the reconcilers.
//!
//! A piece of work implements [`Saga`]: it lists its steps (a `Copy` enum, so that a
//! step can name its interface or network) and runs or undoes one at a time, keeping
//! what the steps made in its own fields. [`run`] drives it.
//!
//! Work whose steps are plain calls in one function uses [`Undo`] instead, the same idea
//! as closures: each step that succeeded pushes its undo, and an early return runs them
//! in reverse.

use std::fmt::Debug;
use std::future::Future;

/// Multi-step work with an undo per step; see the module doc.
pub trait Saga: Send {
    /// One step (e.g. an enum of the steps of network create).
    type Step: Copy + Debug + Send + Sync;
    type Error: Send;

    /// The steps, in the order they run.
    fn steps(&self) -> Vec<Self::Step>;
    /// Runs `step`. On error it must leave nothing of its own behind (its undo is not
    /// called).
    fn run(&mut self, step: Self::Step) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Undoes `step`, which succeeded. Best effort: it logs what it cannot undo.
    fn undo(&mut self, step: Self::Step) -> impl Future<Output = ()> + Send;
}

/// Why a saga stopped: the step that failed and its error.
#[derive(Debug)]
pub struct Failed<S, E> {
    pub step: S,
    pub error: E,
}

/// Runs every step of `saga` in order; on the first failure undoes the steps done, in
/// reverse, and returns that failure.
pub async fn run<S: Saga>(saga: &mut S) -> Result<(), Failed<S::Step, S::Error>> {
    let mut done = Vec::new();
    for step in saga.steps() {
        match saga.run(step).await {
            Ok(()) => done.push(step),
            Err(error) => {
                tracing::debug!(?step, "a step failed; undoing the steps done");
                for d in done.into_iter().rev() {
                    saga.undo(d).await;
                }
                return Err(Failed { step, error });
            }
        }
    }
    Ok(())
}

/// The undo list of an operation made of steps in one function: each step that
/// succeeded pushes its undo; if the operation ends early (an error returned with `?`, a
/// panic), the undos run newest first when this drops. [`Undo::commit`] keeps what was
/// done. Undos never fail (they log what they could not do).
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    /// Adds the undo of a step that succeeded.
    pub fn push(&mut self, undo: impl FnOnce() + Send + 'a) {
        self.steps.push(Box::new(undo));
    }

    /// The operation succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Undoes every step now, newest first, and hands back the error that caused it.
    pub fn fail<E>(self, error: E) -> E {
        drop(self);
        error
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some(undo) = self.steps.pop() {
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what ran and what was undone; fails at `fail_at`.
    struct Log {
        fail_at: Option<u8>,
        log: Vec<String>,
    }

    impl Saga for Log {
        type Step = u8;
        type Error = String;
        fn steps(&self) -> Vec<u8> {
            vec![1, 2, 3]
        }
        async fn run(&mut self, step: u8) -> Result<(), String> {
            if self.fail_at == Some(step) {
                return Err(format!("step {step} failed"));
            }
            self.log.push(format!("run {step}"));
            Ok(())
        }
        async fn undo(&mut self, step: u8) {
            self.log.push(format!("undo {step}"));
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn all_steps_run_in_order_and_nothing_is_undone() {
        let mut s = Log {
            fail_at: None,
            log: Vec::new(),
        };
        block_on(run(&mut s)).unwrap();
        assert_eq!(s.log, ["run 1", "run 2", "run 3"]);
    }

    #[test]
    fn a_failure_undoes_the_steps_done_in_reverse_and_reports_the_step() {
        let mut s = Log {
            fail_at: Some(3),
            log: Vec::new(),
        };
        let e = block_on(run(&mut s)).unwrap_err();
        assert_eq!((e.step, e.error.as_str()), (3, "step 3 failed"));
        assert_eq!(s.log, ["run 1", "run 2", "undo 2", "undo 1"]);
    }

    #[test]
    fn a_failing_first_step_undoes_nothing() {
        let mut s = Log {
            fail_at: Some(1),
            log: Vec::new(),
        };
        let e = block_on(run(&mut s)).unwrap_err();
        assert_eq!(e.step, 1);
        assert!(s.log.is_empty(), "{:?}", s.log);
    }

    #[test]
    fn undo_runs_newest_first_when_dropped_and_nothing_once_committed() {
        let log = std::sync::Mutex::new(Vec::new());
        let early = |fail: bool| -> Result<(), &'static str> {
            let mut undo = Undo::new();
            for i in 1..=3 {
                log.lock().unwrap().push(format!("do {i}"));
                let log = &log;
                undo.push(move || log.lock().unwrap().push(format!("undo {i}")));
            }
            if fail {
                return Err("step 4 failed");
            }
            undo.commit();
            Ok(())
        };
        assert_eq!(early(true), Err("step 4 failed"));
        assert_eq!(
            *log.lock().unwrap(),
            ["do 1", "do 2", "do 3", "undo 3", "undo 2", "undo 1"]
        );
        log.lock().unwrap().clear();
        assert_eq!(early(false), Ok(()));
        assert_eq!(*log.lock().unwrap(), ["do 1", "do 2", "do 3"]);
        let mut undo = Undo::new();
        let log2 = &log;
        undo.push(move || log2.lock().unwrap().push("undone".into()));
        assert_eq!(undo.fail(7), 7);
        assert_eq!(log.lock().unwrap().last().unwrap(), "undone");
    }
}
