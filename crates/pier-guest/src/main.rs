//! `pier-guest`: the init of a Pier VM (to be written).

fn main() {}
