//! A request body must arrive within `BODY_TIMEOUT` of its head. actix-web times only the head
//! (`client_request_timeout`, actix/actix-web#928): a client that announces `Content-Length: 1000` and
//! sends 5 bytes would otherwise hold a worker's connection for as long as it likes.
//!
//! Only the body read is bounded, not the handler: a deadline around the whole handler would also cut a
//! slow database write after it committed, and the client would retry something already stored. The
//! request's payload is wrapped in a stream that fails with `BodyTimedOut` once the deadline passes; the
//! JSON extractor (or `callback_body.rs`) hands that up and `error.rs` answers 408 `body_timeout`, closing
//! the connection.

use std::{future::Future, io, pin::Pin, task::Poll, time::Duration};

use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    middleware::Next,
};
use futures_util::Stream;

/// Ample for the largest body (a 2 MiB batch) on a slow link; far shorter than a stalled client's patience.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The error a late body ends with, inside `PayloadError::Io`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
pub struct BodyTimedOut(Duration);

/// The bound a body missed, when that is why `error` happened.
pub fn limit_of(error: &PayloadError) -> Option<Duration> {
    match error {
        PayloadError::Io(io) => io.get_ref()?.downcast_ref::<BodyTimedOut>().map(|t| t.0),
        _ => None,
    }
}

pub async fn bound_body_time(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    match request.take_payload() {
        Payload::None => {}
        payload => request.set_payload(with_deadline(payload, BODY_TIMEOUT)),
    }
    next.call(request).await
}

/// `payload`, failing with `BodyTimedOut` if it has not ended `limit` from now.
fn with_deadline(mut payload: Payload, limit: Duration) -> Payload {
    let mut deadline = Box::pin(tokio::time::sleep(limit));
    let mut expired = false;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if expired {
            return Poll::Ready(None);
        }
        if let ready @ Poll::Ready(_) = Pin::new(&mut payload).poll_next(cx) {
            return ready;
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                expired = true;
                let error = io::Error::new(io::ErrorKind::TimedOut, BodyTimedOut(limit));
                Poll::Ready(Some(Err(PayloadError::Io(error))))
            }
            Poll::Pending => Poll::Pending,
        }
    });
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::web::Bytes;
    use futures_util::StreamExt;

    use super::*;

    #[actix_web::test]
    async fn a_body_that_stalls_fails_with_the_bound_it_missed() {
        let stalled: Payload = Payload::Stream {
            payload: Box::pin(futures_util::stream::pending()),
        };
        let mut payload = with_deadline(stalled, Duration::from_millis(10));
        let Some(Err(error)) = payload.next().await else {
            panic!("a stalled body must fail");
        };
        let limit = limit_of(&error);
        assert_eq!(limit, Some(Duration::from_millis(10)));
        assert!(payload.next().await.is_none(), "nothing follows the failure");
    }

    #[actix_web::test]
    async fn a_body_that_arrives_in_time_is_passed_through() {
        let mut payload = with_deadline(Payload::from(Bytes::from_static(b"{}")), Duration::from_secs(5));
        assert_eq!(payload.next().await.unwrap().unwrap(), Bytes::from_static(b"{}"));
        assert!(payload.next().await.is_none());
    }
}
