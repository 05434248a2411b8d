//! Instances: what runs. Each kind of instance (a container today, a VM next) is a
//! [`driver`] implementation; the engine owns the record, the state machine and the
//! restart policy, and asks the driver to realise them.

pub mod driver;
