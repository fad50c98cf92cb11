//! The owner thread (skeleton).
pub(crate) mod pool;

use crate::engine::IoRequest;
use crate::error::IoFailure;

/// Everything the owner thread receives.
pub(crate) enum Msg {
    /// An engine finished an I/O.
    Completed(IoRequest, Result<(), IoFailure>),
}
