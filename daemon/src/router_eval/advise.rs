//! `tierwatch advise`: per classifier version and router, what the latest evaluated week says
//! about the threshold in force, in the words a cost owner acts on.

/// One row of `threshold_advice`, as `tierwatch advise` and the report read it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceView {
    pub day: String,
    pub classifier_version: String,
    pub router: String,
    pub window: String,
    pub threshold: f64,
    pub is_current: bool,
    pub is_recommended: bool,
    pub cheap_share: f64,
    pub net_cost_usd: f64,
    pub net_cost_lo_usd: f64,
    pub net_cost_hi_usd: f64,
    /// Net cost of the threshold in force minus this one's, and its bounds.
    pub net_saving: (f64, f64, f64),
    pub extrapolated: bool,
}

/// The advice of one classifier version and router on its latest evaluated day.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub day: String,
    pub classifier_version: String,
    pub router: String,
    pub current: AdviceView,
    pub recommended: Option<AdviceView>,
}

impl Advice {
    /// Net saving of moving to the recommended threshold (positive = cheaper) with its bounds.
    pub fn saving(&self) -> Option<(f64, f64, f64)> {
        Some(self.recommended.as_ref()?.net_saving)
    }

    /// How sure the saving is, in one phrase.
    pub fn confidence(&self) -> &'static str {
        match (self.saving(), &self.recommended) {
            (None, _) => "no threshold meets the failure-rate ceiling",
            (Some(_), Some(r)) if r.threshold == self.current.threshold => {
                "keep it: the threshold in force is the best candidate"
            }
            (Some((_, lo, _)), Some(r)) if lo > 0.0 && !r.extrapolated => {
                "sure: the saving's lower bound is above zero"
            }
            (Some((_, lo, _)), Some(_)) if lo > 0.0 => "likely, but extrapolated from the rescoring slice",
            (Some(_), Some(r)) if r.extrapolated => "unsure: extrapolated, and the bounds include no saving",
            _ => "unsure: the bounds include no saving",
        }
    }
}

/// The latest day's advice per classifier version and router (rows as [`crate::report::load::threshold_advice`]
/// returns them), optionally for one classifier version.
pub fn latest(rows: &[AdviceView], classifier_version: Option<&str>) -> Vec<Advice> {
    let mut out: Vec<Advice> = vec![];
    let mut keys: Vec<(&str, &str)> = rows.iter().map(|r| (r.classifier_version.as_str(), r.router.as_str())).collect();
    keys.dedup();
    for (cv, router) in keys {
        if classifier_version.is_some_and(|want| want != cv) {
            continue;
        }
        let of: Vec<&AdviceView> = rows.iter().filter(|r| r.classifier_version == cv && r.router == router).collect();
        let Some(day) = of.iter().map(|r| r.day.as_str()).max() else { continue };
        let today: Vec<&&AdviceView> = of.iter().filter(|r| r.day == day).collect();
        let Some(current) = today.iter().find(|r| r.is_current) else { continue };
        out.push(Advice {
            day: day.to_string(),
            classifier_version: cv.to_string(),
            router: router.to_string(),
            current: (**current).clone(),
            recommended: today.iter().find(|r| r.is_recommended).map(|r| (**r).clone()),
        });
    }
    out
}

/// The printed lines of one advice.
pub fn render(a: &Advice, window: &str) -> String {
    let mut s = format!(
        "{} ({}), {} window ending {}:\n  threshold in force {:.2}: net cost ${:.2} (${:.2} to ${:.2}), cheap share {:.1}%\n",
        a.classifier_version,
        a.router,
        window,
        a.day,
        a.current.threshold,
        a.current.net_cost_usd,
        a.current.net_cost_lo_usd,
        a.current.net_cost_hi_usd,
        100.0 * a.current.cheap_share
    );
    match (&a.recommended, a.saving()) {
        (Some(r), Some((saving, lo, hi))) => s.push_str(&format!(
            "  recommended {:.2}: net cost ${:.2} (${:.2} to ${:.2}), cheap share {:.1}%{}\n  saving ${:.2} per {} (${:.2} to ${:.2}): {}\n",
            r.threshold,
            r.net_cost_usd,
            r.net_cost_lo_usd,
            r.net_cost_hi_usd,
            100.0 * r.cheap_share,
            if r.extrapolated { " [extrapolated]" } else { "" },
            saving,
            window,
            lo,
            hi,
            a.confidence()
        )),
        _ => s.push_str(&format!("  {}\n", a.confidence())),
    }
    s
}
