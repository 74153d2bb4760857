//! What tenantgate reads inside write bodies, and only when it must: counting rows for the
//! `rows_inserted` rate limit on backends that count none per tenant ([`rows`]), and forcing a token's
//! labels onto remote-write series for backends without VictoriaMetrics' `extra_label` ([`relabel`]).
//! Both walk the bytes ([`protowire`]) after bounded decompression ([`decode`]); neither allocates per
//! row, and no input can make them panic or allocate beyond the limit they are given.

pub mod decode;
pub mod protowire;
pub mod relabel;
pub mod rows;
