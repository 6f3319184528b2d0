//! The `client_id` label of `fhirguard_requests_total` (issue 13): a bounded table of label
//! values, built once per configuration generation, and each value's request series.
//!
//! Bounded, because every label value is a time series Prometheus keeps: a label taken from the
//! token as-is would let any caller with a signed token of an unlisted client — or a flood of
//! them — grow the exposition without limit. So the values are the configured client ids (every
//! smart application's `clientId`), `other` for any verified token whose client is not one of
//! them, and `anonymous` for requests without a verified token. A reload builds a new table; an
//! id it drops stops getting increments, its old series stay (Prometheus counters never go away
//! while the process runs), and one it adds appears at its first request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prometheus::{IntCounter, IntCounterVec};

use super::{RequestSeries, METHODS, OUTCOMES};

/// The `client_id` of a request without a verified token: an anonymous path, a CORS preflight,
/// or a request refused before or at authentication.
pub const ANONYMOUS_CLIENT: &str = "anonymous";
/// The `client_id` of a verified token whose client is not configured.
pub const OTHER_CLIENT: &str = "other";

/// The slots of the two fixed values; configured ids follow.
const ANONYMOUS_SLOT: usize = 0;
const OTHER_SLOT: usize = 1;

/// One client's `fhirguard_requests_total` series, by outcome and method, each resolved on first
/// use: `with_label_values` hashes three labels and takes the vector's lock, which a request
/// should not pay.
type Series = [[OnceLock<IntCounter>; METHODS.len()]; OUTCOMES.len()];

/// The `client_id` label values of one configuration generation, and their series.
pub struct ClientLabels {
    /// `anonymous`, `other`, then each configured id once, in configuration order.
    labels: Box<[Box<str>]>,
    /// A configured id → its slot in `labels`.
    slots: HashMap<Box<str>, usize>,
    /// Provider index → application index → slot: a smart token's application was matched
    /// already, so its label needs no lookup by string.
    applications: Box<[Box<[usize]>]>,
    /// Per slot, its series.
    series: Box<[Series]>,
    /// The [`super::Metrics`] whose counters `series` holds, bound at the first request; another
    /// instance recording through this table takes the uncached path rather than counting into
    /// the first one's registry.
    owner: OnceLock<Arc<RequestSeries>>,
}

/// The values only: the series cache is 64 cells a value.
impl std::fmt::Debug for ClientLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

/// The `client_id` label of one request: a slot in a generation's [`ClientLabels`].
#[derive(Clone, Copy)]
pub struct ClientLabel<'a> {
    labels: &'a ClientLabels,
    slot: usize,
}

impl ClientLabels {
    /// The table for these applications: `providers` yields, per smart identity provider in
    /// configuration order, its applications' client ids in order. An id configured twice (under
    /// two providers) is one label. An id spelt `anonymous` or `other` is counted as `other`, so
    /// that those two values keep their meaning.
    pub fn new<'a, P, A>(providers: P) -> ClientLabels
    where
        P: IntoIterator<Item = A>,
        A: IntoIterator<Item = &'a str>,
    {
        let mut labels: Vec<Box<str>> = vec![ANONYMOUS_CLIENT.into(), OTHER_CLIENT.into()];
        let mut slots: HashMap<Box<str>, usize> = HashMap::new();
        let applications = providers
            .into_iter()
            .map(|applications| {
                applications
                    .into_iter()
                    .map(|id| {
                        if id == ANONYMOUS_CLIENT || id == OTHER_CLIENT {
                            return OTHER_SLOT;
                        }
                        *slots.entry(id.into()).or_insert_with(|| {
                            labels.push(id.into());
                            labels.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        let series = labels.iter().map(|_| Series::default()).collect();
        ClientLabels {
            labels: labels.into_boxed_slice(),
            slots,
            applications,
            series,
            owner: OnceLock::new(),
        }
    }

    /// No configured client: only `anonymous` and `other`.
    pub fn none() -> ClientLabels {
        ClientLabels::new(std::iter::empty::<[&str; 0]>())
    }

    /// The label of a request without a verified token.
    pub fn anonymous(&self) -> ClientLabel<'_> {
        self.at(ANONYMOUS_SLOT)
    }

    /// The label of a verified token naming `client_id` (none: the token names no client): the id
    /// when it is configured, else `other`.
    pub fn client(&self, client_id: Option<&str>) -> ClientLabel<'_> {
        let slot = client_id
            .and_then(|id| self.slots.get(id))
            .copied()
            .unwrap_or(OTHER_SLOT);
        self.at(slot)
    }

    /// The label of the application at `application` of the smart provider at `provider` (their
    /// indexes in the configuration), if there is one.
    pub fn application(&self, provider: usize, application: usize) -> Option<ClientLabel<'_>> {
        let slot = *self.applications.get(provider)?.get(application)?;
        Some(self.at(slot))
    }

    /// Every value, `anonymous` and `other` first.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|label| &**label)
    }

    fn at(&self, slot: usize) -> ClientLabel<'_> {
        ClientLabel { labels: self, slot }
    }
}

impl std::fmt::Debug for ClientLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientLabel").field(&self.as_str()).finish()
    }
}

impl<'a> ClientLabel<'a> {
    /// The label value.
    pub fn as_str(&self) -> &'a str {
        self.labels
            .labels
            .get(self.slot)
            .map_or(OTHER_CLIENT, |label| &**label)
    }

    /// The counter of `OUTCOMES[outcome]`, `METHODS[method]` and this client on `requests`,
    /// resolved once per generation; `None` when this table serves another registry than
    /// `owner`'s (the caller then resolves the series itself).
    pub(super) fn counter(
        self,
        owner: &Arc<RequestSeries>,
        requests: &IntCounterVec,
        outcome: usize,
        method: usize,
    ) -> Option<&'a IntCounter> {
        let bound = self.labels.owner.get_or_init(|| Arc::clone(owner));
        if !Arc::ptr_eq(bound, owner) {
            return None;
        }
        let cell = self
            .labels
            .series
            .get(self.slot)?
            .get(outcome)?
            .get(method)?;
        Some(cell.get_or_init(|| {
            requests.with_label_values(&[OUTCOMES[outcome], METHODS[method], self.as_str()])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ClientLabels {
        ClientLabels::new([
            vec!["reader", "writer"],
            vec!["reader", "other", "anonymous"],
        ])
    }

    #[test]
    fn values_are_the_configured_ids_once_and_the_two_fixed_ones() {
        let labels = table();
        assert_eq!(
            labels.values().collect::<Vec<_>>(),
            ["anonymous", "other", "reader", "writer"]
        );
        assert_eq!(
            ClientLabels::none().values().collect::<Vec<_>>(),
            ["anonymous", "other"]
        );
    }

    #[test]
    fn a_principal_maps_to_its_label() {
        let labels = table();
        assert_eq!(labels.anonymous().as_str(), "anonymous");
        assert_eq!(
            format!("{labels:?} {:?}", labels.anonymous()),
            r#"["anonymous", "other", "reader", "writer"] ClientLabel("anonymous")"#
        );
        assert_eq!(labels.client(Some("writer")).as_str(), "writer");
        assert_eq!(labels.client(Some("stranger")).as_str(), "other");
        assert_eq!(labels.client(None).as_str(), "other");
        // A client spelt like a fixed value cannot pass for anonymous traffic.
        assert_eq!(labels.client(Some("anonymous")).as_str(), "other");
        let label = |p, a| labels.application(p, a).map(|l| l.as_str());
        assert_eq!(label(0, 1), Some("writer"));
        assert_eq!(label(1, 0), Some("reader"));
        assert_eq!(label(1, 2), Some("other"));
        assert_eq!(label(1, 3), None);
        assert_eq!(label(2, 0), None);
    }
}
