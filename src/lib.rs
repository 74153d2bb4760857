//! tenantgate: an open-source, drop-in replacement for VictoriaMetrics' enterprise vmgateway.
//!
//! It sits in front of VictoriaMetrics (single-node or cluster), verifies the JWT on every request, reads
//! the token's `vm_access` claim, and forwards the request only to the tenant and label set that claim
//! grants. See `ARCHITECTURE.md` for the bird's-eye view and the invariants.
//!
//! # Layout
//! - [`flags`]: Go-style command line (vmgateway-compatible) to a typed [`flags::Config`]; no I/O.
//! - [`listen`]: start-up, one accept loop per CPU thread, TLS handshakes, graceful shutdown.
//! - [`server`]: the request pipeline, `/health`, `/metrics`.
//! - [`route`]: pure; `(method, path)` to a [`route::Route`] or a refusal. An allow-list.
//! - [`auth`]: token from headers to a verified [`auth::Grant`], with the verified-token cache.
//!   - [`auth::claims`]: pure; `vm_access` in both layouts, object or string.
//!   - [`auth::keys`]: PEM, JWK and HMAC keys, each pinned to its algorithms; the immutable key set.
//!   - [`auth::jwt`]: pure; compact JWS verification and time, issuer and audience checks.
//!   - [`auth::fetch`]: loading keys, and the only code that talks to identity providers.
//! - [`client_body`]: the request body as the pipeline carries it; what becomes of an unread rest.
//! - [`limit`]: global and per-tenant concurrency limits (429).
//! - [`rewrite`]: pure; upstream path with tenant, client restriction arguments stripped, grant's added.
//! - [`proxy`]: the only code that talks to backends; header hygiene and streaming; backend pools
//!   (`proxy::Backends`: balancing, failover, retries, discovery).
//! - [`dns`]: A, AAAA and SRV questions for backend discovery.
//!   - [`proxy::wire`]: pure; HTTP/1.1 request heads out, answer heads and chunked bodies in.
//!   - `proxy::conn`: backend sockets, the idle pool, the streamed answer body.
//! - [`promql`]: pure; PromQL rewritten so every selector carries a grant's matchers (Prometheus-family
//!   read backends); [`rules_filter`]: their rules and alerts answers cut down to a grant.
//! - [`metrics`]: the gateway's own counters and histograms.
//! - [`error`]: one error type; its kind decides status, JSON body and metric label.
//! - [`logging`]: VictoriaMetrics-style or JSON log lines.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod check;
pub mod client_body;
pub mod dns;
pub mod error;
pub mod flags;
pub mod ingest;
pub mod limit;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod prom_api;
pub mod promql;
pub mod proxy;
pub mod push;
pub mod ratelimit;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod rules_filter;
pub mod secrets;
pub mod server;
