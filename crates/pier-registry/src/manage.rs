//! The management view of the registry.
