//! A small undo list for the volumes' multi-step work: each step that changed something
//! pushes what takes it back; a failure runs them newest first, success forgets them.
//! (The engine's shared step runner may replace it.)

/// Undo actions, run newest first on failure.
#[derive(Default)]
pub(crate) struct Undo<'a> {
    steps: Vec<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    /// Remembers how to take back a step that succeeded.
    pub fn push(&mut self, f: impl FnOnce() + 'a) {
        self.steps.push(Box::new(f));
    }

    /// Takes back every step, newest first, and hands back the error that caused it.
    pub fn fail<E>(self, e: E) -> E {
        for f in self.steps.into_iter().rev() {
            f();
        }
        e
    }

    /// The work succeeded: nothing is taken back.
    pub fn done(self) {}
}
