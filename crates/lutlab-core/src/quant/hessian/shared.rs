//! One factorization per input: the linears that read the same input (q, k and v; gate and up)
//! share its Hessian, and GPTQ/LDLQ's damped, ordered factor of it depends only on that Hessian
//! and the rounding settings. While a [`ShareFactors`] guard for a Hessian lives, the rounding of
//! each layer given that very Hessian computes the factor once (the others wait for it, or find
//! it done) and reuses it.
//!
//! A Hessian is recognized by its address: the guard borrows it, so while the guard lives the
//! matrix cannot be freed or changed and no other matrix can take its place. A layer given a copy
//! (a layerwise-smoothed or incoherence-processed Hessian) is not shared and factors its own.

use super::linalg::Square;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a factor depends on besides the Hessian: the kind of factor (its type: the CPU's f64
/// one, the GPU's) and the settings that shape it, as the factoring code states them.
pub type FactorKey = (TypeId, Vec<u64>);

/// A computed factor, or the lock its first computer holds while others wait.
type Slot = Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>;

/// Factors of shared Hessians by the Hessian's address, then by key.
type Registry = Option<HashMap<usize, Vec<(FactorKey, Slot)>>>;

static SHARED: Mutex<Registry> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves the map consistent (inserts and removes
    // are single steps), so a poisoned lock is still usable.
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, roundings given `hessian` share its factors; dropping it frees them.
pub struct ShareFactors<'h> {
    address: usize,
    _hessian: PhantomData<&'h Square>,
}

impl<'h> ShareFactors<'h> {
    pub fn new(hessian: &'h Square) -> Self {
        let address = std::ptr::from_ref(hessian) as usize;
        registry().get_or_insert_with(HashMap::new).entry(address).or_default();
        Self { address, _hessian: PhantomData }
    }
}

impl Drop for ShareFactors<'_> {
    fn drop(&mut self) {
        if let Some(map) = registry().as_mut() {
            map.remove(&self.address);
        }
    }
}

/// `compute()` for `hessian` under `settings`, computed once per shared Hessian (see the module
/// note); without a guard for `hessian`, simply computed. A failed computation is not kept: the
/// next layer tries again (and fails alike, naming its own layer).
pub fn factor_of<T: Any + Send + Sync, E>(hessian: &Square, settings: Vec<u64>, compute: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
    let address = std::ptr::from_ref(hessian) as usize;
    let key: FactorKey = (TypeId::of::<T>(), settings);
    let slot = {
        let mut registry = registry();
        let Some(slots) = registry.as_mut().and_then(|map| map.get_mut(&address)) else {
            return compute().map(Arc::new);
        };
        match slots.iter().find(|(k, _)| *k == key) {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = Slot::default();
                slots.push((key, slot.clone()));
                slot
            }
        }
    };
    // The registry is released: other Hessians' factors proceed while this one is computed.
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = held.as_ref().and_then(|any| any.clone().downcast::<T>().ok()) {
        return Ok(done);
    }
    let computed = Arc::new(compute()?);
    *held = Some(computed.clone());
    Ok(computed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_shared_hessian_is_factored_once_and_a_copy_is_not_shared() {
        let h = Square::identity(3);
        let copy = h.clone();
        let computed = AtomicUsize::new(0);
        let compute = || -> Result<usize, ()> { Ok(computed.fetch_add(1, Ordering::SeqCst)) };
        {
            let _shared = ShareFactors::new(&h);
            // Concurrent layers of one input: one computation, every layer gets its result.
            let results: Vec<usize> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4).map(|_| s.spawn(|| *factor_of(&h, vec![1], compute).unwrap())).collect();
                handles.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert_eq!(computed.load(Ordering::SeqCst), 1);
            assert!(results.iter().all(|&r| r == 0));
            // Other settings are another factor; a copy of the matrix is another Hessian.
            factor_of(&h, vec![2], compute).unwrap();
            factor_of(&copy, vec![1], compute).unwrap();
            assert_eq!(computed.load(Ordering::SeqCst), 3);
        }
        // The guard gone, nothing is kept.
        factor_of(&h, vec![1], compute).unwrap();
        assert_eq!(computed.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_failed_factor_is_tried_again() {
        let h = Square::identity(2);
        let _shared = ShareFactors::new(&h);
        assert_eq!(factor_of::<u8, &str>(&h, vec![], || Err("not positive definite")).unwrap_err(), "not positive definite");
        assert_eq!(*factor_of::<u8, &str>(&h, vec![], || Ok(7)).unwrap(), 7);
    }
}
