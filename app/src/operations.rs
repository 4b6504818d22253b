//! Operating the platform: read-model versions and lag, dead letters and
//! their replay. Operators are the owners and admins of the operator
//! organization ([`crate::AppConfig::operator_org`]); for everyone else
//! these queries do not exist (the same answer as any read they may not
//! make).

use std::sync::Arc;

use deadpool_postgres::Pool;
use trackhrs_domain::Token;
use trackhrs_domain::permissions::Read;
use trackhrs_nats::EventStore;
use trackhrs_projections::Supervise;
pub use trackhrs_projections::usage::{self, KindUsage, OrgUsage};
pub use trackhrs_projections::{DeadLetter, ReplayReport, VersionStatus};

use crate::administration::AtPosition;
use crate::caller::Caller;
use crate::error::{AppError, NOT_YOURS};
use crate::reads::ReadModels;

/// Finds the read model or policy called by a name: the platform's list.
pub type Finder = Arc<dyn Fn(&str) -> Option<Box<dyn Supervise>> + Send + Sync>;

/// The operations use cases.
#[derive(Clone)]
pub struct Operations {
    reads: ReadModels,
    store: EventStore,
    pool: Pool,
    operator_org: Option<Token>,
    find: Option<Finder>,
}

impl Operations {
    pub(crate) fn new(
        reads: ReadModels,
        store: EventStore,
        pool: Pool,
        operator_org: Option<Token>,
    ) -> Self {
        Self {
            reads,
            store,
            pool,
            operator_org,
            find: None,
        }
    }

    pub(crate) fn set_finder(&mut self, find: Finder) {
        self.find = Some(find);
    }

    /// Refuses everyone but an active owner or admin of the operator org.
    async fn authorize(&self, caller: &Caller) -> Result<(), AppError> {
        if self.operator_org.as_ref() != Some(&caller.org) {
            return Err(AppError::not_allowed(NOT_YOURS));
        }
        self.reads.authorize(caller, Read::Operations).await?;
        Ok(())
    }

    /// The `limit` organizations holding the most bytes in the event
    /// stream, by aggregate type, at least at `min_position`.
    #[tracing::instrument(skip_all)]
    pub async fn usage(
        &self,
        caller: &Caller,
        limit: u32,
        min_position: u64,
    ) -> Result<AtPosition<Vec<OrgUsage>>, AppError> {
        self.authorize(caller).await?;
        let model = self.reads.read_model(usage::NAME, min_position).await?;
        let orgs = usage::largest(&model.client, &model.schema, limit).await?;
        Ok(AtPosition {
            value: orgs,
            position: model.position,
        })
    }

    /// Every version of every read model with its lag.
    #[tracing::instrument(skip_all)]
    pub async fn projections(&self, caller: &Caller) -> Result<Vec<VersionStatus>, AppError> {
        self.authorize(caller).await?;
        let client = self.pool.get().await?;
        Ok(trackhrs_projections::status(&client, &self.store).await?)
    }

    /// The dead letters of one read model, or of all.
    #[tracing::instrument(skip_all)]
    pub async fn dead_letters(
        &self,
        caller: &Caller,
        projection: Option<&str>,
    ) -> Result<Vec<DeadLetter>, AppError> {
        self.authorize(caller).await?;
        if let Some(name) = projection {
            self.supervisor(name)?;
        }
        Ok(trackhrs_projections::list_dead_letters(&self.store, projection).await?)
    }

    /// Applies a read model's dead letters again.
    #[tracing::instrument(skip_all)]
    pub async fn replay(
        &self,
        caller: &Caller,
        projection: &str,
    ) -> Result<ReplayReport, AppError> {
        self.authorize(caller).await?;
        Ok(self.supervisor(projection)?.replay_dead_letters().await?)
    }

    fn supervisor(&self, name: &str) -> Result<Box<dyn Supervise>, AppError> {
        self.find
            .as_ref()
            .and_then(|find| find(name))
            .ok_or_else(|| {
                AppError::invalid("projection", format!("no read model is called {name:?}"))
            })
    }
}
