//! Test doubles of the conformance checks: a deterministic generator, and a hub that injects gaps and backend errors into its subscriptions.

use super::*;

/// A small deterministic generator: the checks must be reproducible.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

pub(super) fn rng_for_client(reconnects: u64) -> Lcg {
    let mut rng = Lcg(0xc1_1e47 ^ reconnects.wrapping_mul(0x9e37_79b9));
    rng.below(2);
    rng
}

/// A hub whose subscriptions yield `Err(Error::Gap)` after the user's
/// `gap_after`th event and `Err(Error::Backend)` after the `error_after`th.
pub(super) struct InjectFaults<'a, H> {
    pub(super) hub: &'a H,
    pub(super) gap_after: usize,
    pub(super) error_after: usize,
}

impl<H: EventSource<C>> EventSource<C> for InjectFaults<'_, H> {
    type Subscription = FaultyStream<H::Subscription>;

    async fn subscribe(
        &self,
        reader: impl Into<crate::Reader> + Send,
        filter: CategorySet<C>,
    ) -> Result<Self::Subscription, Error> {
        let reader = reader.into();
        let user = reader.user;
        let inner = self.hub.subscribe(reader, filter).await?;
        Ok(FaultyStream {
            inner,
            user,
            own_events: 0,
            pending: None,
            gap_after: self.gap_after,
            error_after: self.error_after,
        })
    }

    fn missed_events(
        &self,
        user: UserId,
        last_event_id: EventId,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<Replay<C>, Error>> + Send {
        self.hub.missed_events(user, last_event_id, filter)
    }

    fn missed_since(
        &self,
        reader: impl Into<crate::Reader> + Send,
        from: Positions,
        filter: CategorySet<C>,
    ) -> impl Future<Output = Result<StreamReplay<C>, Error>> + Send {
        self.hub.missed_since(reader, from, filter)
    }

    fn horizon(&self) -> Option<crate::Position> {
        self.hub.horizon()
    }

    fn disconnect(&self, user: UserId) -> impl Future<Output = Result<(), Error>> + Send {
        self.hub.disconnect(user)
    }
}

/// The subscription of [`InjectFaults`].
pub(super) struct FaultyStream<S> {
    inner: S,
    user: UserId,
    own_events: usize,
    pending: Option<Error>,
    gap_after: usize,
    error_after: usize,
}

impl<S> futures_core::Stream for FaultyStream<S>
where
    S: futures_core::Stream<Item = Result<Event<C>, Error>> + Unpin,
{
    type Item = Result<Event<C>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(error) = this.pending.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let item = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(event))) = &item
            && event.audience() == Audience::User(this.user)
        {
            this.own_events += 1;
            if this.own_events == this.gap_after {
                this.pending = Some(Error::Gap { last_delivered: Some(event.id()), stream: None });
            } else if this.own_events == this.error_after {
                this.pending = Some(Error::backend(INJECTED_ERROR));
            }
        }
        item
    }
}
