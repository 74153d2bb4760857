//! Concurrency limits: a global one and one per tenant, answering 429 with `Retry-After` when full.
//!
//! A "tenant" here is what a token grants: its `account:project` together with its labels and filters,
//! so two teams sharing a single-node backend (both tenant 0:0) get separate budgets. The global limit is
//! one atomic counter; the per-tenant counters live in a bounded `quick_cache` map (sharded, short internal
//! locks, no allocation on a hit), created only when `-maxConcurrentRequestsPerTenant` is set. A permit is
//! held until the backend's response headers arrive, which covers a whole upload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::auth::Grant;
use crate::error::{ErrorKind, GatewayError};

/// The limits in force; both zero means no limiting and no cost.
pub struct Limits {
    global_max: usize,
    global: Arc<AtomicUsize>,
    tenant_max: usize,
    tenants: Option<quick_cache::sync::Cache<String, Arc<AtomicUsize>>>,
}

/// Held while a request is served; gives its slots back when dropped.
pub struct Permit {
    counters: [Option<Arc<AtomicUsize>>; 2],
}

impl Drop for Permit {
    fn drop(&mut self) {
        for counter in self.counters.iter().flatten() {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Limits {
    /// Limits from `-maxConcurrentRequests` and `-maxConcurrentRequestsPerTenant` (0 = unlimited).
    pub fn new(global_max: usize, tenant_max: usize) -> Limits {
        Limits {
            global_max,
            global: Arc::new(AtomicUsize::new(0)),
            tenant_max,
            // Enough entries for every active tenant; an evicted idle tenant simply starts at zero again.
            tenants: (tenant_max > 0).then(|| quick_cache::sync::Cache::new(65_536)),
        }
    }

    /// Takes a slot for `grant`, or refuses with 429.
    pub fn acquire(&self, grant: &Grant) -> Result<Permit, GatewayError> {
        let mut permit = Permit {
            counters: [None, None],
        };
        if self.global_max > 0 {
            take(&self.global, self.global_max).map_err(|()| {
                GatewayError::new(
                    ErrorKind::TooManyRequests,
                    "too many concurrent requests (-maxConcurrentRequests); retry later",
                )
            })?;
            permit.counters[0] = Some(self.global.clone());
        }
        if let Some(tenants) = &self.tenants {
            let key = format!("{}?{}", grant.args.tenant, grant.args.read);
            let counter = match tenants.get(&key) {
                Some(c) => c,
                None => {
                    let c = Arc::new(AtomicUsize::new(0));
                    tenants.insert(key, c.clone());
                    c
                }
            };
            take(&counter, self.tenant_max).map_err(|()| {
                GatewayError::new(
                    ErrorKind::TooManyRequests,
                    "too many concurrent requests for this tenant (-maxConcurrentRequestsPerTenant); retry later",
                )
            })?;
            permit.counters[1] = Some(counter);
        }
        Ok(permit)
    }
}

/// Increments `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> Result<(), ()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map(|_| ())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{Access, Mode, Tenant};

    fn grant(project: u32, team: &str) -> Grant {
        Grant::open(Access {
            tenant: Tenant {
                account: 0,
                project,
            },
            extra_labels: vec![("team".into(), team.into())],
            extra_filters: vec![],
            mode: Mode {
                read: true,
                write: true,
            },
        })
    }

    #[test]
    fn per_tenant_budgets_are_separate_and_released() {
        let limits = Limits::new(0, 2);
        let dev = grant(0, "dev");
        let ops = grant(0, "ops");
        let a = limits.acquire(&dev).unwrap();
        let _b = limits.acquire(&dev).unwrap();
        let e = limits.acquire(&dev).err().unwrap();
        assert_eq!(e.kind, ErrorKind::TooManyRequests);
        assert!(
            limits.acquire(&ops).is_ok(),
            "another team has its own budget"
        );
        drop(a);
        assert!(limits.acquire(&dev).is_ok());
    }

    #[test]
    fn global_limit() {
        let limits = Limits::new(1, 0);
        let g = grant(1, "x");
        let p = limits.acquire(&g).unwrap();
        assert!(limits.acquire(&grant(2, "y")).is_err());
        drop(p);
        assert!(limits.acquire(&g).is_ok());
    }

    #[test]
    fn unlimited_is_free() {
        let limits = Limits::new(0, 0);
        let g = grant(1, "x");
        let permits: Vec<_> = (0..1000).map(|_| limits.acquire(&g).unwrap()).collect();
        assert_eq!(permits.len(), 1000);
    }
}
