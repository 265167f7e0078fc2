//! End-to-end tests of Herald (in `tests/it`) and an example receiver (in `examples/`).
