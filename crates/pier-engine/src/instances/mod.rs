//! Instances: what runs. Each kind of instance (a container today, a VM next) is a
//! [`driver::Driver`] implementation; the engine owns the record, the state machine and
//! the restart policy, and asks the driver to realise them.
//!
//! - [`driver`]: the seam (the trait and its typed inputs and outputs).
//! - [`container`]: the container driver (bundle, overlay, cgroup, zygote and monitor).
//! - [`fake`]: a recording driver with failure injection, for the engine test tier.
//! - [`Undo`]: the undo list of a multi-step operation.

pub mod actor;
pub mod container;
pub mod driver;
pub mod fake;

/// The undo steps of an operation made of steps: each step that succeeded pushes its
/// undo; if the operation ends early (an error returned with `?`), the undos run in
/// reverse order when this drops. [`Undo::commit`] keeps what was done.
#[derive(Default)]
pub struct Undo {
    steps: Vec<Box<dyn FnOnce() + Send>>,
}

impl Undo {
    /// Adds the undo of a step that succeeded.
    pub fn push(&mut self, undo: impl FnOnce() + Send + 'static) {
        self.steps.push(Box::new(undo));
    }

    /// The operation succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some(undo) = self.steps.pop() {
            undo();
        }
    }
}
