//! Query texts: the intent catalogue, templates with slots, paraphrase styling and typos.
//!
//! * A **simple center** (account lookup, password reset, order tracking, opening hours …) and a
//!   **complex tail** (refund disputes, plan-change trade-offs, integration troubleshooting,
//!   billing anomalies, GDPR, chargebacks, contract terms, account merges …), several templates
//!   each, filled with slot values (order ids, amounts, dates, cities, plans, apps, errors …).
//! * **Hidden complexity**: a complex intent (fraud, reconciliation delay, unannounced
//!   billing-cycle change, duplicate charge …) asked through a simple *surface* intent's words
//!   ("where is my charge from?"). Half of those openers are literally the surface intent's own
//!   templates (no text model can tell them apart); the other half carry a subtle cue a better
//!   rescorer may pick up.
//! * The new-product cohort (drift) asks about **FlexPay** (installments), new vocabulary for the
//!   router.
//! * Styling: greetings, sign-offs, lower-casing, dropped question marks; then typos (adjacent
//!   swaps, drops, doubled letters, keyboard-neighbour slips) at a configurable per-query rate.
//!
//! All texts are ASCII.

use super::rng::Rng;

/// Reason label of a ticket / coarse topic of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Account,
    Orders,
    Store,
    Billing,
    Technical,
    Privacy,
    Contract,
    Cancellation,
}

impl Topic {
    pub fn as_str(&self) -> &'static str {
        match self {
            Topic::Account => "account",
            Topic::Orders => "orders",
            Topic::Store => "store",
            Topic::Billing => "billing",
            Topic::Technical => "technical",
            Topic::Privacy => "privacy",
            Topic::Contract => "contract",
            Topic::Cancellation => "cancellation",
        }
    }
}

/// One intent of the catalogue.
#[derive(Debug)]
pub struct Intent {
    pub name: &'static str,
    pub complex: bool,
    pub topic: Topic,
    /// Relative weight among intents of the same complexity, established traffic.
    pub w_base: f64,
    /// Relative weight among intents of the same complexity, new-product (FlexPay) cohort.
    pub w_cohort: f64,
    /// Opening-turn templates.
    pub templates: &'static [&'static str],
}

/// A complex intent asked through a simple intent's surface.
#[derive(Debug)]
pub struct Hidden {
    /// The true (complex) intent: an index into [`INTENTS`] by name.
    pub intent: &'static str,
    pub w_base: f64,
    pub w_cohort: f64,
    /// Simple intents whose words it borrows.
    pub surfaces: &'static [&'static str],
    /// Surface-simple openers with a subtle cue.
    pub cues: &'static [&'static str],
    /// Follow-ups that reveal the real intent.
    pub reveals: &'static [&'static str],
}

pub static INTENTS: &[Intent] = &[
    // ---- simple center ----
    Intent {
        name: "account_lookup",
        complex: false,
        topic: Topic::Account,
        w_base: 6.0,
        w_cohort: 3.0,
        templates: &[
            "What plan am I on?",
            "Which email is on my account?",
            "Can you tell me my account number?",
            "When did I sign up?",
            "When does my {plan} plan renew?",
            "Is my account still active?",
            "What's the name on account {account}?",
        ],
    },
    Intent {
        name: "password_reset",
        complex: false,
        topic: Topic::Account,
        w_base: 9.0,
        w_cohort: 4.0,
        templates: &[
            "How do I reset my password?",
            "I forgot my password",
            "The password reset email never arrived at {email}",
            "Can't log in, I need a new password",
            "How do I change my password in the app?",
            "Reset password please",
            "My password stopped working after the update, how do I reset it?",
        ],
    },
    Intent {
        name: "order_tracking",
        complex: false,
        topic: Topic::Orders,
        w_base: 12.0,
        w_cohort: 3.0,
        templates: &[
            "Where is my order {order}?",
            "Has order {order} shipped yet?",
            "Track my package {order}",
            "What's the status of my order from {date}?",
            "Is my {item} on its way?",
            "Order {order} tracking",
            "Can you check on my {item} order? It's {order}",
        ],
    },
    Intent {
        name: "opening_hours",
        complex: false,
        topic: Topic::Store,
        w_base: 5.0,
        w_cohort: 1.0,
        templates: &[
            "What time does the {city} store open on {weekday}?",
            "Are you open on {weekday}?",
            "Opening hours {city}",
            "When do you close today in {city}?",
            "Is the {city} shop open {weekday}?",
            "What are your hours over {holiday}?",
        ],
    },
    Intent {
        name: "update_address",
        complex: false,
        topic: Topic::Account,
        w_base: 5.0,
        w_cohort: 2.0,
        templates: &[
            "How do I update my shipping address?",
            "I moved, please change my address to {street}",
            "Change the delivery address for order {order}",
            "How do I update my billing address?",
            "Can I change my address before {order} ships?",
        ],
    },
    Intent {
        name: "cancel_order",
        complex: false,
        topic: Topic::Orders,
        w_base: 6.0,
        w_cohort: 1.0,
        templates: &[
            "Cancel order {order}",
            "I want to cancel my order from {date}",
            "How do I cancel an order?",
            "Please cancel my {item} order",
            "Can I still cancel {order}?",
        ],
    },
    Intent {
        name: "invoice_copy",
        complex: false,
        topic: Topic::Billing,
        w_base: 5.0,
        w_cohort: 6.0,
        templates: &[
            "Can you send me a copy of my invoice for {month}?",
            "Where can I download my invoices?",
            "I need the invoice for order {order}",
            "Please resend my {month} invoice to {email}",
            "Invoice copy please",
            "How do I get a VAT invoice for my {plan} subscription?",
        ],
    },
    Intent {
        name: "delivery_time",
        complex: false,
        topic: Topic::Orders,
        w_base: 6.0,
        w_cohort: 1.0,
        templates: &[
            "How long does delivery take to {city}?",
            "When will my {item} arrive?",
            "Do you deliver on {weekday}?",
            "What's the shipping time for express delivery?",
            "How many days does delivery to {country} take?",
        ],
    },
    Intent {
        name: "change_email",
        complex: false,
        topic: Topic::Account,
        w_base: 3.0,
        w_cohort: 1.0,
        templates: &[
            "How do I change the email on my account?",
            "Update my email to {email}",
            "I want to use a different email address",
            "Change my login email please",
        ],
    },
    Intent {
        name: "store_locations",
        complex: false,
        topic: Topic::Store,
        w_base: 3.0,
        w_cohort: 0.5,
        templates: &[
            "Where is your nearest store to {city}?",
            "Do you have a shop in {city}?",
            "Store locations in {country}",
            "What's the closest store to {street}?",
        ],
    },
    Intent {
        name: "return_policy",
        complex: false,
        topic: Topic::Orders,
        w_base: 4.0,
        w_cohort: 1.0,
        templates: &[
            "What's your return policy?",
            "Can I return my {item} after {n} weeks?",
            "How do I return an item?",
            "Do you offer free returns?",
            "Is the return window {n} days or {n2} days?",
        ],
    },
    Intent {
        name: "charge_lookup",
        complex: false,
        topic: Topic::Billing,
        w_base: 3.0,
        w_cohort: 8.0,
        templates: &[
            "Where is my charge from?",
            "What is this {amount} charge on my card?",
            "What's the {amount} charge on {date}?",
            "Can you explain the charge from {date}?",
            "What is the {amount} payment for?",
            "What's this charge from you on my {card}?",
        ],
    },
    Intent {
        name: "payment_status",
        complex: false,
        topic: Topic::Billing,
        w_base: 2.0,
        w_cohort: 6.0,
        templates: &[
            "Has my payment gone through?",
            "Did you receive my payment of {amount}?",
            "When will my payment be processed?",
            "Is my {plan} payment complete?",
            "Did my payment on {date} work?",
        ],
    },
    Intent {
        name: "refund_status",
        complex: false,
        topic: Topic::Billing,
        w_base: 3.0,
        w_cohort: 3.0,
        templates: &[
            "Has my refund been processed?",
            "When will I get my refund for {order}?",
            "Where is my refund of {amount}?",
            "How long do refunds take?",
        ],
    },
    Intent {
        name: "installment_schedule",
        complex: false,
        topic: Topic::Billing,
        w_base: 0.0,
        w_cohort: 14.0,
        templates: &[
            "When is my next {plan} installment due?",
            "How many {plan} payments are left?",
            "What date is my {plan} payment taken?",
            "Can I see my {plan} payment schedule?",
            "How much is my next {plan} installment?",
        ],
    },
    // ---- complex tail ----
    Intent {
        name: "refund_dispute",
        complex: true,
        topic: Topic::Billing,
        w_base: 5.0,
        w_cohort: 3.0,
        templates: &[
            "I returned the {item} {n} weeks ago and still no refund, and the courier says it was never picked up",
            "You refunded {amount} but I paid {amount2}, I want the difference back",
            "My refund was denied but the {item} arrived broken, I want to dispute this",
            "I was promised a full refund in chat and now I only got store credit",
            "The refund for {order} went to a card I closed, what happens to the money?",
        ],
    },
    Intent {
        name: "plan_change_tradeoffs",
        complex: true,
        topic: Topic::Cancellation,
        w_base: 5.0,
        w_cohort: 1.0,
        templates: &[
            "Should I switch from {plan} to {plan2} if we add {n} users mid-cycle?",
            "What do I lose if I downgrade from {plan} to {plan2}, and is the annual discount prorated?",
            "Compare {plan} and {plan2} for a team of {n} that needs SSO and audit logs",
            "If I upgrade to {plan2} now and downgrade next month, how are the credits handled?",
            "We're thinking of cancelling {plan}, is there a cheaper plan that keeps our history?",
        ],
    },
    Intent {
        name: "integration_troubleshooting",
        complex: true,
        topic: Topic::Technical,
        w_base: 6.0,
        w_cohort: 1.0,
        templates: &[
            "The {app} integration stopped syncing orders since {date}, we get {error}",
            "Webhooks to {app} fail with {error} but only for some events",
            "After reconnecting {app} half of my contacts are duplicated, how do I fix it?",
            "The API returns {error} when I push from {app} but it works in the sandbox",
            "Our {app} sync is {n} hours behind and the retry button does nothing",
        ],
    },
    Intent {
        name: "billing_anomaly",
        complex: true,
        topic: Topic::Billing,
        w_base: 3.0,
        w_cohort: 4.0,
        templates: &[
            "My bill jumped from {amount} to {amount2} with no change in usage",
            "I'm being charged for {n2} seats but we only have {n}",
            "The invoice shows {country} tax but we're VAT exempt and sent the certificate",
            "We downgraded to {plan} last month but were billed for {plan2} again",
        ],
    },
    Intent {
        name: "data_export_gdpr",
        complex: true,
        topic: Topic::Privacy,
        w_base: 2.0,
        w_cohort: 1.0,
        templates: &[
            "I want all the data you hold on me under GDPR article 15",
            "Please delete my account and all personal data, and confirm in writing",
            "How do I export all our workspace data including deleted records?",
            "Send me a copy of my personal data and who you shared it with",
        ],
    },
    Intent {
        name: "chargeback",
        complex: true,
        topic: Topic::Billing,
        w_base: 2.0,
        w_cohort: 3.0,
        templates: &[
            "My bank says you responded to my chargeback, what happens to my account now?",
            "I disputed a charge with my bank, will my {plan} subscription be cancelled?",
            "The chargeback for {amount} was reversed, why?",
            "I filed a chargeback by mistake, how do I undo it without losing my order?",
        ],
    },
    Intent {
        name: "contract_terms",
        complex: true,
        topic: Topic::Contract,
        w_base: 3.0,
        w_cohort: 0.5,
        templates: &[
            "What's the notice period to terminate our enterprise agreement before renewal?",
            "Does our contract allow us to reduce seats mid-term?",
            "Can we get net-60 payment terms instead of net-30?",
            "What are the liability caps in the MSA for a data breach?",
            "Our renewal quote went up {n}0%, is that allowed under the price-protection clause?",
        ],
    },
    Intent {
        name: "multi_account_merge",
        complex: true,
        topic: Topic::Account,
        w_base: 2.0,
        w_cohort: 1.0,
        templates: &[
            "I have two accounts ({email} and {email2}), can you merge them and keep the order history?",
            "Merge my personal and business accounts without losing my {plan} credits",
            "We acquired another company, how do we consolidate {n} accounts into one billing account?",
        ],
    },
    Intent {
        name: "fraud_report",
        complex: true,
        topic: Topic::Billing,
        w_base: 1.0,
        w_cohort: 2.0,
        templates: &[
            "Someone made purchases on my account that I didn't authorize",
            "There are {n} orders I never placed, I think my account was hacked",
            "I see a charge of {amount} from you that I didn't make",
        ],
    },
    Intent {
        name: "outage_sla_credit",
        complex: true,
        topic: Topic::Contract,
        w_base: 2.0,
        w_cohort: 0.5,
        templates: &[
            "Your outage on {date} broke our checkout for {n} hours, how do we claim SLA credits?",
            "We had downtime again, what credit are we owed under the SLA?",
            "Is the incident on {date} covered by our {plan} SLA?",
        ],
    },
    Intent {
        name: "reconciliation_delay",
        complex: true,
        topic: Topic::Billing,
        w_base: 0.5,
        w_cohort: 2.0,
        templates: &[
            "My payment left my bank {n} days ago but my account still shows unpaid",
            "The {amount} transfer cleared on our side on {date}, why is the invoice still open?",
        ],
    },
    Intent {
        name: "billing_cycle_change",
        complex: true,
        topic: Topic::Billing,
        w_base: 0.5,
        w_cohort: 2.0,
        templates: &[
            "Why did my billing date move from the {n}th to the 1st without notice?",
            "You changed my billing cycle and now I was charged twice in {month}",
        ],
    },
    Intent {
        name: "duplicate_charge",
        complex: true,
        topic: Topic::Billing,
        w_base: 0.5,
        w_cohort: 2.0,
        templates: &[
            "I was charged twice for order {order}",
            "There are two {amount} charges for the same subscription",
        ],
    },
    Intent {
        name: "installment_plan_change",
        complex: true,
        topic: Topic::Billing,
        w_base: 0.0,
        w_cohort: 8.0,
        templates: &[
            "Can I move my {plan} plan from 4 to 6 installments without a fee?",
            "I missed a {plan} payment, how do I avoid the late fee and protect my credit score?",
            "Can I pay off {plan} early and get the interest back?",
            "My {plan} installments were split differently than at checkout, which one is right?",
        ],
    },
];

pub static HIDDEN: &[Hidden] = &[
    Hidden {
        intent: "fraud_report",
        w_base: 3.0,
        w_cohort: 3.0,
        surfaces: &["charge_lookup"],
        cues: &[
            "Where is this {amount} charge from? Never seen it before",
            "What's the charge on {date}? I don't remember buying anything",
            "What is this payment from you on my {card}?",
        ],
        reveals: &[
            "No, I never made that purchase",
            "That wasn't me, I don't have an account with that email",
            "I didn't order anything on {date}",
        ],
    },
    Hidden {
        intent: "reconciliation_delay",
        w_base: 2.0,
        w_cohort: 3.0,
        surfaces: &["payment_status", "charge_lookup"],
        cues: &[
            "Has my payment gone through? My bank says it has",
            "When will my payment show? I sent it {n} days ago",
            "Did you get my {amount}? The money has left my account",
        ],
        reveals: &[
            "But my bank already shows it as paid",
            "It left my account on {date}, why is it still pending?",
            "I paid on time and now there's a late fee",
        ],
    },
    Hidden {
        intent: "billing_cycle_change",
        w_base: 2.0,
        w_cohort: 5.0,
        surfaces: &["charge_lookup", "invoice_copy", "installment_schedule"],
        cues: &[
            "Why was I charged today?",
            "Why did my payment come out early this month?",
            "When is my payment taken now?",
            "Why is my {plan} payment on a different date?",
        ],
        reveals: &[
            "But my billing date used to be the {n}th",
            "Nobody told me the date changed and now I'm overdrawn",
            "So I'm paying twice this month?",
        ],
    },
    Hidden {
        intent: "duplicate_charge",
        w_base: 1.5,
        w_cohort: 3.0,
        surfaces: &["charge_lookup", "payment_status"],
        cues: &["Why are there two charges from you?", "What's the second {amount} charge?"],
        reveals: &["It's the same order charged twice", "I only bought one {item}"],
    },
    Hidden {
        intent: "billing_anomaly",
        w_base: 2.0,
        w_cohort: 3.0,
        surfaces: &["invoice_copy", "charge_lookup"],
        cues: &[
            "Why is my bill different this month?",
            "Can you send my {month} invoice? The total looks off",
            "Why is my invoice {amount} this time?",
        ],
        reveals: &["The amount is wrong, it should be {amount2}", "We didn't add any seats"],
    },
    Hidden {
        intent: "refund_dispute",
        w_base: 1.5,
        w_cohort: 1.0,
        surfaces: &["refund_status"],
        cues: &["Where is my refund? It's been {n} weeks", "When will I get my refund? You said 5 days"],
        reveals: &["The seller says I was never refunded", "I only got part of it back"],
    },
    Hidden {
        intent: "chargeback",
        w_base: 1.0,
        w_cohort: 1.0,
        surfaces: &["payment_status"],
        cues: &["Why is my account on hold after my payment?", "Did my payment fail? My account is locked"],
        reveals: &["My bank reversed a charge, is that why?"],
    },
];

/// Follow-up turns of a simple conversation.
pub static FOLLOW_SIMPLE: &[&str] = &[
    "Thanks! And how long does that take?",
    "Ok, can you send me the link?",
    "What about order {order}?",
    "Great, and is that the same for {plan}?",
    "Got it. Do I need to do anything else?",
    "Perfect thanks",
    "And on {weekday}?",
    "Can I do that from the app?",
    "ok and where do I find that",
];

/// Follow-up turns of a complex conversation.
pub static FOLLOW_COMPLEX: &[&str] = &[
    "That doesn't answer my question",
    "I already tried that and it still doesn't work",
    "Can I talk to a human?",
    "What about the {amount} difference?",
    "So what are my options?",
    "This is the {n}rd time I'm asking",
    "Can you escalate this?",
    "And what happens if I don't agree?",
];

/// Follow-up turns of a hidden-complex conversation that still read simple.
pub static FOLLOW_SURFACE: &[&str] =
    &["Ok thanks", "And when will it show on my statement?", "Ok, so that's normal?", "Thanks, where can I see that?"];

/// Index of an intent by name.
pub fn intent_index(name: &str) -> Option<usize> {
    INTENTS.iter().position(|i| i.name == name)
}

const CITIES: &[&str] = &[
    "Berlin",
    "Munich",
    "Hamburg",
    "Vienna",
    "Zurich",
    "Amsterdam",
    "Rotterdam",
    "Paris",
    "Lyon",
    "Madrid",
    "Barcelona",
    "Milan",
    "Rome",
    "Lisbon",
    "Dublin",
    "London",
    "Manchester",
    "Leeds",
    "Copenhagen",
    "Stockholm",
    "Oslo",
    "Warsaw",
    "Prague",
    "Brussels",
];
const COUNTRIES: &[&str] =
    &["Germany", "Austria", "France", "Spain", "Italy", "Ireland", "the UK", "Norway", "Poland", "Belgium", "Portugal"];
const WEEKDAYS: &[&str] =
    &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "the weekend"];
const HOLIDAYS: &[&str] = &["Easter", "Christmas", "New Year", "the bank holiday", "Whit Monday"];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const ITEMS: &[&str] = &[
    "blender",
    "running shoes",
    "desk lamp",
    "headphones",
    "coffee machine",
    "backpack",
    "phone case",
    "monitor",
    "office chair",
    "rain jacket",
    "kettle",
    "keyboard",
    "air fryer",
    "yoga mat",
    "tent",
    "toaster",
];
const PLANS: &[&str] = &["Basic", "Plus", "Pro", "Business", "Family", "Team"];
const APPS: &[&str] = &["Shopify", "Salesforce", "Zapier", "HubSpot", "Slack", "QuickBooks", "Xero", "WooCommerce"];
const ERRORS: &[&str] = &[
    "401 unauthorized",
    "a webhook timeout",
    "rate limit exceeded",
    "error 500",
    "invalid signature",
    "a token expired error",
    "ERR_SYNC_CONFLICT",
];
const CARDS: &[&str] = &["visa", "mastercard", "amex", "debit card"];
const NAMES: &[&str] = &["anna", "ben", "chris", "dana", "eli", "farah", "georg", "hana", "ivan", "jo", "kim", "lea"];
const DOMAINS: &[&str] = &["gmail.com", "outlook.com", "web.de", "proton.me", "example.org", "yahoo.co.uk"];
const STREETS: &[&str] =
    &["Hauptstrasse", "Main Street", "Rue de la Paix", "Calle Mayor", "Kings Road", "Via Roma", "Oak Avenue"];

/// Fill `{slot}`s of a template. `cohort` selects the new product (FlexPay) for `{plan}`.
pub fn fill(rng: &mut Rng, template: &str, cohort: bool, out: &mut String) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return;
        };
        slot(rng, &after[..close], cohort, out);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
}

fn push_pick(rng: &mut Rng, xs: &[&str], out: &mut String) {
    if let Some(s) = rng.pick(xs) {
        out.push_str(s);
    }
}

fn slot(rng: &mut Rng, name: &str, cohort: bool, out: &mut String) {
    use std::fmt::Write;
    match name {
        "order" => {
            let letter = (b'A' + rng.below(26) as u8) as char;
            match rng.below(3) {
                0 => {
                    let _ = write!(out, "#{letter}{:06}", rng.range(0, 999_999));
                }
                1 => {
                    let _ = write!(out, "{:08}", rng.range(10_000_000, 99_999_999));
                }
                _ => {
                    let _ = write!(out, "ORD-{}{:04}", letter, rng.range(0, 9_999));
                }
            }
        }
        "amount" | "amount2" => {
            let cents = [0, 99, 49, 95, 50, 0, 18, 75][rng.below(8)];
            let euros = if rng.bool(0.7) { rng.range(3, 120) } else { rng.range(120, 2_400) };
            let sym = ["$", "EUR ", "", "GBP "][rng.below(4)];
            if cents == 0 && rng.bool(0.5) {
                let _ = write!(out, "{sym}{euros}");
            } else {
                let _ = write!(out, "{sym}{euros}.{cents:02}");
            }
        }
        "date" => match rng.below(4) {
            0 => {
                push_pick(rng, MONTHS, out);
                let _ = write!(out, " {}", rng.range(1, 28));
            }
            1 => {
                let _ = write!(out, "the {}th", rng.range(4, 28));
            }
            2 => push_pick(rng, &["yesterday", "last week", "last Tuesday", "Friday", "the weekend", "Monday"], out),
            _ => {
                let _ = write!(out, "{:02}/{:02}", rng.range(1, 28), rng.range(1, 12));
            }
        },
        "month" => push_pick(rng, MONTHS, out),
        "city" => push_pick(rng, CITIES, out),
        "country" => push_pick(rng, COUNTRIES, out),
        "weekday" => push_pick(rng, WEEKDAYS, out),
        "holiday" => push_pick(rng, HOLIDAYS, out),
        "item" => push_pick(rng, ITEMS, out),
        "plan" => {
            if cohort && rng.bool(0.85) {
                out.push_str("FlexPay");
            } else {
                push_pick(rng, PLANS, out);
            }
        }
        "plan2" => {
            // A different plan than the `{plan}` already written (if any).
            let used: Vec<&str> = PLANS.iter().copied().filter(|p| out.contains(p)).collect();
            let free: Vec<&str> = PLANS.iter().copied().filter(|p| !used.contains(p)).collect();
            push_pick(rng, &free, out);
        }
        "app" => push_pick(rng, APPS, out),
        "error" => push_pick(rng, ERRORS, out),
        "card" => {
            push_pick(rng, CARDS, out);
            let _ = write!(out, " ending {:04}", rng.range(0, 9_999));
        }
        "email" | "email2" => {
            push_pick(rng, NAMES, out);
            if rng.bool(0.6) {
                let _ = write!(out, "{}", rng.range(1, 999));
            }
            out.push('@');
            push_pick(rng, DOMAINS, out);
        }
        "street" => {
            let _ = write!(out, "{} ", rng.range(1, 180));
            push_pick(rng, STREETS, out);
        }
        "account" => {
            let _ = write!(out, "{:07}", rng.range(0, 9_999_999));
        }
        "n" => {
            let _ = write!(out, "{}", rng.range(2, 9));
        }
        "n2" => {
            let _ = write!(out, "{}", rng.range(10, 40));
        }
        other => {
            out.push('{');
            out.push_str(other);
            out.push('}');
        }
    }
}

const PREFIXES: &[&str] =
    &["hi ", "hello, ", "hey, ", "Hi there. ", "quick question - ", "pls help: ", "Good morning, ", "Hello! "];
const SUFFIXES: &[&str] = &[" thanks", " thx", " please", " asap", "??", " :)", " - thank you", " !!"];

/// Paraphrase styling: greeting / sign-off, casing, punctuation.
pub fn style(rng: &mut Rng, text: &str, first_turn: bool) -> String {
    let mut s = String::with_capacity(text.len() + 24);
    // Greetings open a conversation; the draw is made either way to keep streams aligned.
    let prefixed = rng.bool(0.22) && first_turn;
    if prefixed {
        push_pick(rng, PREFIXES, &mut s);
    }
    let body_start = s.len();
    s.push_str(text);
    if prefixed {
        // Lower-case the first letter of the body after a greeting ("hi where is …").
        if let Some(c) = s[body_start..].chars().next() {
            if c.is_ascii_uppercase() && rng.bool(0.7) {
                s.replace_range(body_start..body_start + 1, &c.to_ascii_lowercase().to_string());
            }
        }
    }
    if rng.bool(0.18) && s.ends_with('?') {
        s.pop();
    }
    if rng.bool(0.16) {
        push_pick(rng, SUFFIXES, &mut s);
    }
    if rng.bool(0.25) {
        s.make_ascii_lowercase();
    }
    s
}

const KEY_ROWS: [&[u8]; 3] = [b"qwertyuiop", b"asdfghjkl", b"zxcvbnm"];

fn neighbour(rng: &mut Rng, c: char) -> char {
    let lower = c.to_ascii_lowercase() as u8;
    for row in KEY_ROWS {
        if let Some(i) = row.iter().position(|&b| b == lower) {
            let j = if i == 0 {
                1
            } else if i + 1 == row.len() || rng.bool(0.5) {
                i - 1
            } else {
                i + 1
            };
            let n = row[j] as char;
            return if c.is_ascii_uppercase() { n.to_ascii_uppercase() } else { n };
        }
    }
    c
}

/// With probability `rate`, 1–2 character-level typos (swap, drop, double, neighbour key).
pub fn typos(rng: &mut Rng, text: String, rate: f64) -> String {
    if !rng.bool(rate) {
        return text;
    }
    let mut chars: Vec<char> = text.chars().collect();
    let edits = if rng.bool(0.3) { 2 } else { 1 };
    for _ in 0..edits {
        let letters: Vec<usize> = (0..chars.len()).filter(|&i| chars[i].is_ascii_alphabetic()).collect();
        if letters.len() < 4 {
            break;
        }
        let i = letters[rng.below(letters.len())];
        match rng.below(4) {
            0 => {
                if i + 1 < chars.len() && chars[i + 1].is_ascii_alphabetic() {
                    chars.swap(i, i + 1);
                } else if i > 0 && chars[i - 1].is_ascii_alphabetic() {
                    chars.swap(i - 1, i);
                }
            }
            1 => {
                chars.remove(i);
            }
            2 => {
                let c = chars[i];
                chars.insert(i, c);
            }
            _ => {
                let c = neighbour(rng, chars[i]);
                chars[i] = c;
            }
        }
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        let names: std::collections::BTreeSet<_> = INTENTS.iter().map(|i| i.name).collect();
        assert_eq!(names.len(), INTENTS.len(), "unique intent names");
        assert!(INTENTS.iter().filter(|i| !i.complex).count() >= 10);
        assert!(INTENTS.iter().filter(|i| i.complex).count() >= 10);
        for i in INTENTS {
            assert!(i.templates.len() >= 2, "{}", i.name);
        }
        for h in HIDDEN {
            let idx = intent_index(h.intent).unwrap();
            assert!(INTENTS[idx].complex, "{}", h.intent);
            for s in h.surfaces {
                assert!(!INTENTS[intent_index(s).unwrap()].complex, "{s}");
            }
            assert!(!h.cues.is_empty() && !h.reveals.is_empty());
        }
        // Every slot used anywhere is known.
        let mut rng = Rng::new(1);
        let all = INTENTS
            .iter()
            .flat_map(|i| i.templates.iter())
            .chain(HIDDEN.iter().flat_map(|h| h.cues.iter().chain(h.reveals.iter())))
            .chain(FOLLOW_SIMPLE.iter())
            .chain(FOLLOW_COMPLEX.iter())
            .chain(FOLLOW_SURFACE.iter());
        for t in all {
            let mut s = String::new();
            fill(&mut rng, t, true, &mut s);
            assert!(!s.contains('{') && !s.contains('}'), "{t} -> {s}");
            assert!(s.is_ascii());
        }
    }

    #[test]
    fn typos_change_text_at_rate() {
        let mut rng = Rng::new(7);
        let mut changed = 0;
        for _ in 0..2000 {
            let t = typos(&mut rng, "Where is my order #A123456?".to_string(), 0.2);
            if t != "Where is my order #A123456?" {
                changed += 1;
            }
        }
        // A swap of two equal letters is a no-op, so slightly below the rate.
        assert!((300..=440).contains(&changed), "{changed}");
    }
}
