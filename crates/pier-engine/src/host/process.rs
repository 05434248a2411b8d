//! (being written) the process side of the host; see [`super`].
