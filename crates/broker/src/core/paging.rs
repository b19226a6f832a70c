//! Reading paged-out bodies back from the store, for a destination's
//! dispatchers and browsers: the reads run as futures the actor polls, and
//! what comes back is charged to the broker's memory budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::dispatch::Dispatcher;
use super::registry::BrokerCore;
use crate::memory::MemoryBudget;
use crate::model::Message;
use crate::store::StoreError;

/// Bodies being read back from the store.
pub(crate) type Loading = Option<Pin<Box<dyn Future<Output = Loaded> + Send>>>;
type Loaded = Vec<(u64, Result<Arc<Message>, StoreError>)>;

/// Starts reading back the bodies a dispatcher wants, unless a read is
/// already under way.
pub(crate) fn start_loading(shared: &BrokerCore, d: &mut Dispatcher, loading: &mut Loading) {
    if loading.is_some() {
        return;
    }
    let want = d.wanted_loads();
    if !want.is_empty() {
        let store = shared.store.clone();
        let memory = shared.memory.clone();
        *loading = Some(Box::pin(async move {
            let mut loaded = store.load(want).await;
            charge_loaded(&memory, &mut loaded);
            loaded
        }));
    }
}

/// Charges bodies read back from the store to the broker's memory budget
/// (they come back uncharged, from a reader that knows nothing of budgets).
pub(crate) fn charge_loaded(budget: &Arc<MemoryBudget>, loaded: &mut Loaded) {
    for (_, r) in loaded {
        if let Ok(m) = r
            && let Some(m) = Arc::get_mut(m)
        {
            m.charge = budget.charge(m.weight());
        }
    }
}

/// Waits for the read under way (never resolves if there is none).
pub(crate) async fn next_loaded(loading: &mut Loading) -> Loaded {
    match loading {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
