//! (being written) the instance driver seam; see [`super`].
