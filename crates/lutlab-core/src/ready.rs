//! Running, without an executor, a future that never waits: code shared between the CPU paths
//! (synchronous) and the GPU's (async, because the browser can only wait for the GPU by
//! yielding) is written once as an `async fn`, and the CPU paths call it through [`now`].

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The output of `future`, which must be ready at its first poll: every `.await` inside it is on
/// a future that is itself ready (CPU work written as `async` to share code with the GPU).
pub fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        // A programming error, not bad input: a CPU path handed a future that waits.
        Poll::Pending => unreachable!("ready::now: the future waited (a GPU future on a CPU path)"),
    }
}

#[cfg(test)]
mod tests {
    use super::now;

    #[test]
    fn async_code_without_waits_runs_to_its_end() {
        let double = async |x: u32| x * 2;
        assert_eq!(now(async { double(3).await + double(4).await }), 14);
    }
}
