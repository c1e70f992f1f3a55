//! Table tests of `plan` and of the state transitions, with time passed in.
