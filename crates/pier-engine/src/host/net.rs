//! (being written) the net side of the host; see [`super`].
