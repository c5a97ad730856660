//! `[alerts]`: where alerts are delivered, and the settings of the rules, which their features own
//! (`alert::quality`, `alert::misroute`, `drift::routed_share`).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};
use crate::alert::misroute::MisrouteRuleConfig;
use crate::alert::quality::QualityRuleConfig;
use crate::alert::WebhookConfig;
use crate::drift::routed_share::RoutedShareRuleConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Webhooks that receive every alert transition (firing, escalated, resolved).
    pub webhooks: Vec<WebhookConfig>,
    /// No longer used: notifications wait in the store's alert outbox (`tw_alert_outbox`) until
    /// delivered, never dropped. Accepted so existing config files keep loading.
    pub queue_capacity: usize,
    /// Tier quality regression rule (docs/contract.md#tier_quality_regression).
    pub quality: QualityRuleConfig,
    /// Misroute-estimate rule on the rescorer's weighted estimates
    /// (docs/contract.md#misroute_estimate; needs `[rescore]`).
    pub misroute: MisrouteRuleConfig,
    /// Hysteresis of the routed-share-deviation alert (targets in `[routing.targets]`).
    pub routed_share: RoutedShareRuleConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: vec![],
            queue_capacity: 1024,
            quality: Default::default(),
            misroute: Default::default(),
            routed_share: Default::default(),
        }
    }
}

impl Validate for AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.misroute.validate()?;
        self.routed_share.validate()?;
        for (i, w) in self.webhooks.iter().enumerate() {
            if let Err(e) = w.validate() {
                return Err(invalid(&format!("alerts.webhooks[{i}]"), e.to_string()));
            }
        }
        self.quality.validate()?;
        if self.queue_capacity == 0 {
            return Err(invalid("alerts.queue_capacity", "must be ≥ 1"));
        }
        Ok(())
    }
}
