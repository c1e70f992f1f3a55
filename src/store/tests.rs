//! Store tests on a temporary sled database.
