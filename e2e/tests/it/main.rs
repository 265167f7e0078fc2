//! End-to-end tests: the three services in-process against the real RabbitMQ and Redis, each
//! test in its own vhost and Redis prefix so tests run in parallel.

mod archive;
mod autodisable;
mod cluster;
mod consumer;
mod contract;
mod filters;
mod idempotency;
mod isolation;
mod metrics;
mod opwebhooks;
mod ordering;
mod paging;
mod pipeline;
mod portal;
mod redis_stall;
mod retention;
mod retries;
mod security;
mod sessions;
mod stalls;
mod stats;
