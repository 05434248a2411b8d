//! (being written) the storage side of the host; see [`super`].
