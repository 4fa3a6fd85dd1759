//! `ReceiptWriterActor`: stores the receipts of concurrent `POST /receipts` requests together.
//!
//! A provider sends most receipts one per request, many requests at once. Stored one by one, each receipt
//! costs a statement and a commit. Here the requests that arrive while a write runs wait for the next one,
//! which stores all of them in one statement and one commit (group commit): no timer, so a lone request
//! is written at once. A request is answered only once its receipts are committed, so a 202 still means
//! stored. The receipt applier is told each write's `seq`s.
//!
//! A write the database refuses for what it holds (see `StoreError::is_refusal`) is written again one
//! request at a time, so one bad receipt fails only its own request.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::ReceiptsStored;
use crate::{
    domain::Receipt,
    store::{ReceiptStore, StoreError},
    telemetry::error_chain,
};

/// Receipts one write takes at most, whole requests only: a request of up to 1,000 may go alone over it.
const MAX_WRITE: usize = 1_000;

/// API → writer: store a request's receipts; answered once they are committed.
#[derive(Message)]
#[rtype(result = "Result<(), ReceiptsNotStored>")]
pub struct StoreReceipts(pub Vec<Receipt>);

/// A request's receipts were not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReceiptsNotStored {
    /// The database failed; every request of the write gets the same error.
    #[error(transparent)]
    Database(Arc<StoreError>),
    #[error("the receipt writer stopped before storing them")]
    Stopped,
}

type Reply = oneshot::Sender<Result<(), ReceiptsNotStored>>;

pub struct ReceiptWriterActor {
    store: Arc<dyn ReceiptStore>,
    applier: Recipient<ReceiptsStored>,
    /// Requests waiting for the next write, in arrival order.
    waiting: Vec<(Vec<Receipt>, Reply)>,
    writing: bool,
}

impl ReceiptWriterActor {
    pub fn new(store: Arc<dyn ReceiptStore>, applier: Recipient<ReceiptsStored>) -> Self {
        Self {
            store,
            applier,
            waiting: Vec::new(),
            writing: false,
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.waiting.is_empty() {
            return;
        }
        let mut taken = 0;
        let mut count = 0;
        for (receipts, _) in &self.waiting {
            if taken > 0 && count + receipts.len() > MAX_WRITE {
                break;
            }
            taken += 1;
            count += receipts.len();
        }
        let requests: Vec<(Vec<Receipt>, Reply)> = self.waiting.drain(..taken).collect();
        self.writing = true;
        let store = Arc::clone(&self.store);
        ctx.spawn(
            async move {
                let all: Vec<Receipt> = requests
                    .iter()
                    .flat_map(|(receipts, _)| receipts.iter().cloned())
                    .collect();
                match store.insert_receipts(&all).await {
                    Ok(seqs) => {
                        for (_, reply) in requests {
                            // A request whose client went away still has its receipts stored.
                            let _ = reply.send(Ok(()));
                        }
                        seqs
                    }
                    Err(error) if error.is_refusal() && requests.len() > 1 => {
                        log::warn!(
                            requests = requests.len();
                            "the database refused a group of receipts, storing each request alone: {}",
                            error_chain(&error)
                        );
                        one_at_a_time(store.as_ref(), requests).await
                    }
                    Err(error) => {
                        let error = ReceiptsNotStored::Database(Arc::new(error));
                        for (_, reply) in requests {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Vec::new()
                    }
                }
            }
            .into_actor(self)
            .map(|seqs, act, ctx| {
                act.writing = false;
                if !seqs.is_empty() {
                    act.applier.do_send(ReceiptsStored { seqs });
                }
                act.write(ctx);
            }),
        );
    }
}

/// Each request in its own statement, each answered with its own outcome: the `seq`s stored.
async fn one_at_a_time(store: &dyn ReceiptStore, requests: Vec<(Vec<Receipt>, Reply)>) -> Vec<i64> {
    let mut stored = Vec::new();
    for (receipts, reply) in requests {
        let outcome = match store.insert_receipts(&receipts).await {
            Ok(seqs) => {
                stored.extend(seqs);
                Ok(())
            }
            Err(error) => Err(ReceiptsNotStored::Database(Arc::new(error))),
        };
        let _ = reply.send(outcome);
    }
    stored
}

impl Actor for ReceiptWriterActor {
    type Context = Context<Self>;
}

impl Handler<StoreReceipts> for ReceiptWriterActor {
    type Result = ResponseFuture<Result<(), ReceiptsNotStored>>;

    fn handle(&mut self, StoreReceipts(receipts): StoreReceipts, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.waiting.push((receipts, reply));
        self.write(ctx);
        Box::pin(async move {
            // No answer: the actor stopped with the request still waiting (the system is shutting down).
            answer.await.unwrap_or(Err(ReceiptsNotStored::Stopped))
        })
    }
}
