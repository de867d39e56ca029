//! What the cluster serves, as any node answers it: a model's metadata,
//! Triton's statistics and the list of tensor models. A node answers for
//! its own models and asks the live trusted nodes whose gossip lists the
//! others; statistics are summed over every node that serves the model,
//! so each node gives the same answer for the cluster.

use std::collections::BTreeSet;

use gpumesh_membership::ClusterView;

use crate::executor::MetadataDoc;
use crate::executor::statistics::{ModelStatisticsDoc, merge};
use crate::routing::service::RoutingService;

/// Other live trusted members that serve a tensor model (`model`, or any
/// when `None`).
fn holders<'a>(view: &'a ClusterView, model: Option<&'a str>) -> impl Iterator<Item = &'a str> + 'a {
    view.members
        .iter()
        .filter(move |m| {
            !m.is_self
                && m.is_trusted_live()
                && m.load.as_ref().is_some_and(|load| {
                    load.models.iter().any(|lm| lm.llm.is_none() && model.is_none_or(|name| lm.name == name))
                })
        })
        .map(|m| m.name.as_str())
}

impl RoutingService {
    /// Metadata of `model`: from this node when it serves it, else from a
    /// live trusted node whose gossip lists it.
    pub async fn metadata(&self, model: &str) -> Option<MetadataDoc> {
        if let Some(served) = self.model(model) {
            return Some(served.metadata_doc(self.me()));
        }
        let view = self.view();
        for holder in holders(&view, Some(model)) {
            if let Some(doc) = self.peers().metadata(holder, model).await {
                return Some(doc);
            }
        }
        None
    }

    /// The tensor models served here or by a live trusted node, by name.
    pub fn model_names(&self) -> BTreeSet<String> {
        let view = self.view();
        let mut names: BTreeSet<String> = self.models().iter().map(|m| m.spec.name.clone()).collect();
        for member in view.members.iter().filter(|m| m.is_self || m.is_trusted_live()) {
            let models = member.load.iter().flat_map(|load| &load.models);
            names.extend(models.filter(|lm| lm.llm.is_none()).map(|lm| lm.name.clone()));
        }
        names
    }

    /// Triton's statistics of `model` (of every tensor model when `None`),
    /// summed over this node and every live trusted node that serves it
    /// and answers; one document per model. Empty when no node serves it.
    pub async fn statistics(&self, model: Option<&str>) -> Vec<ModelStatisticsDoc> {
        let view = self.view();
        let wanted = model.unwrap_or("");
        let asked = holders(&view, model).map(|holder| self.peers().statistics(holder, wanted));
        let answers = futures_util::future::join_all(asked).await;
        let here = self.models().iter().map(|m| m.statistics_doc());
        let there = answers.into_iter().flatten().flatten();
        // Peers answer only for what they were asked; everything is
        // filtered here too, so a confused peer cannot add a model.
        merge(here.chain(there).filter(|doc| model.is_none_or(|name| doc.name == name)))
    }
}
