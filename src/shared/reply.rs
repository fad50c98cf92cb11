//! The reply to a request: a channel with room for exactly one answer,
//! made by the client that asks and carried by its request. The owner
//! answers it, or, for a get whose block had to be read, the thread that
//! completes the read does (`engine::Grant`), so it is shared by all
//! three parties.

use crate::error::Error;
use crossbeam_channel::Sender;

/// A successful answer from the owner.
#[derive(Debug)]
pub(crate) enum Answer {
    Slot(u32),
    Unit,
    Blocks(u64),
    /// Answer to `Stop` and `Release`: the owner thread is exiting now.
    Stopping(bool),
}

pub(crate) type Response = Result<Answer, Error>;

/// The sending half of one request's reply. Dropping it unanswered (the
/// owner unwinding, or a request still queued when the owner exits) answers
/// `Err(Closed)`, so no client waits for a reply that will never come.
pub(crate) struct Replier(Option<Sender<Response>>);

impl Replier {
    pub(crate) fn new(tx: Sender<Response>) -> Replier {
        Replier(Some(tx))
    }

    pub(crate) fn send(mut self, r: Response) {
        self.answer(r);
    }

    /// Send `r` unless an answer has gone already: the one answer.
    fn answer(&mut self, r: Response) {
        if let Some(tx) = self.0.take() {
            // The client waits for exactly this one reply in a channel with
            // room for one: try_send cannot find it full (rule 1 of `owner`:
            // the owner never blocks).
            let _ = tx.try_send(r);
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        self.answer(Err(Error::Closed));
    }
}
