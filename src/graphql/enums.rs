//! GraphQL enums. Those read from upstream are open: each has `UNKNOWN`, and the object keeps the
//! raw string beside it (`chargeMode` and `chargeModeRaw`), so a new upstream value never fails a
//! query.

/// Declares an open enum with the upstream spelling of each value.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $raw:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version of witty-bff does not know (see the matching `…Raw` field).
            Unknown,
        }

        impl $name {
            /// Reads the upstream spelling (case-insensitive); anything else is `Unknown`.
            pub fn from_upstream(raw: &str) -> Self {
                $(if raw.trim().eq_ignore_ascii_case($raw) { return $name::$variant; })*
                $name::Unknown
            }

            /// The upstream spelling; `None` for `Unknown`.
            pub fn to_upstream(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some($raw),)*
                    $name::Unknown => None,
                }
            }

            /// Every known upstream spelling, for error messages.
            #[allow(dead_code)]
            pub fn known() -> &'static [&'static str] {
                &[$($raw),*]
            }
        }
    };
}

open_enum!(
    /// How the station decides when to charge.
    ChargeMode {
        Immediate => "immediate",
        Deferred => "deferred",
        DeferredExclusive => "deferredExclusive",
    }
);

open_enum!(
    Timezone {
        GmtStandardTime => "GMT Standard Time",
        RomanceStandardTime => "Romance Standard Time",
        WEuropeStandardTime => "W. Europe Standard Time",
    }
);

open_enum!(
    Culture {
        EnGb => "en-gb",
        FrFr => "fr-fr",
        DeDe => "de-de",
    }
);

open_enum!(
    /// A priced tariff of a grid subscription.
    TariffId {
        Th => "th", Hc => "hc", Hp => "hp", Hn => "hn", Pm => "pm",
        Hcjb => "hcjb", Hpjb => "hpjb", Hcjw => "hcjw", Hpjw => "hpjw", Hcjr => "hcjr", Hpjr => "hpjr",
        #[graphql(name = "TARIFF1")] Tariff1 => "tariff1",
        #[graphql(name = "TARIFF2")] Tariff2 => "tariff2",
        #[graphql(name = "TARIFF3")] Tariff3 => "tariff3",
        #[graphql(name = "TARIFF4")] Tariff4 => "tariff4",
        #[graphql(name = "TARIFF5")] Tariff5 => "tariff5",
        #[graphql(name = "TARIFF6")] Tariff6 => "tariff6",
        #[graphql(name = "TARIFF7")] Tariff7 => "tariff7",
        #[graphql(name = "TARIFF8")] Tariff8 => "tariff8",
        #[graphql(name = "TARIFF9")] Tariff9 => "tariff9",
        #[graphql(name = "TARIFF10")] Tariff10 => "tariff10",
    }
);

open_enum!(
    /// Low (HC) or high (HP) price period.
    TariffType {
        Hc => "hc",
        Hp => "hp",
    }
);

open_enum!(
    GridSubscription {
        Base => "BASE",
        Hchp => "HCHP",
        Ejp => "EJP",
        Tempo => "TEMPO",
        Standard => "STANDARD",
    }
);

open_enum!(
    Availability {
        Available => "available",
        Occupied => "occupied",
        Charging => "charging",
        Unavailable => "unavailable",
    }
);

open_enum!(
    PhaseNumber {
        MonoPhase => "monoPhase",
        ThreePhase => "threePhase",
    }
);

open_enum!(
    /// Whether a car is plugged in, and into which socket. Only `m3` is documented upstream.
    CarPlugStatus {
        Unplugged => "unplugged",
        /// Plugged into the station's mode 3 socket (IEC 61851-1 mode 3, a Type 2 socket).
        #[graphql(name = "MODE_3")]
        Mode3 => "m3",
    }
);

open_enum!(
    KeySwitch {
        Locked => "locked",
        Unlocked => "unlocked",
    }
);

open_enum!(
    ConnectivityType {
        Ethernet => "ethernet",
        Wifi => "wifi",
    }
);

open_enum!(
    /// Whether the house's TIC data may be sent to Hager.
    TicConsent {
        Consent => "consent",
        NoConsent => "noConsent",
    }
);

open_enum!(
    TicType {
        Idle => "idle",
        HistoricTri => "historicTri",
        StandardMono => "standardMono",
        StandardTri => "standardTri",
        StandardProducer => "standardProducer",
        HistoricMono => "historicMono",
    }
);

open_enum!(
    UserRole {
        Owner => "owner",
        Installer => "installer",
    }
);

/// Aggregation operators of `Measure.values`.
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AggregationOperator {
    Sum,
    Count,
    Average,
    MinMax,
}

/// Aggregation steps (`HOUR`, `DAY` and `MONTH` documented; `WEEK` and `YEAR` accepted).
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Step {
    pub fn to_upstream(self) -> &'static str {
        match self {
            Step::Hour => "hour",
            Step::Day => "day",
            Step::Week => "week",
            Step::Month => "month",
            Step::Year => "year",
        }
    }
}

/// `ticType` comes as a number in the model and a name in logs.
pub(crate) fn tic_type_of(raw: &str) -> TicType {
    match raw.trim() {
        "0" => TicType::Idle,
        "1" => TicType::HistoricTri,
        "2" => TicType::StandardMono,
        "3" => TicType::StandardTri,
        "4" => TicType::StandardProducer,
        "5" => TicType::HistoricMono,
        other => TicType::from_upstream(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_stay_open() {
        assert_eq!(ChargeMode::from_upstream("deferredexclusive"), ChargeMode::DeferredExclusive);
        assert_eq!(ChargeMode::from_upstream("solarOnly"), ChargeMode::Unknown);
        assert_eq!(ChargeMode::Unknown.to_upstream(), None);
        assert_eq!(Timezone::from_upstream("W. Europe Standard Time"), Timezone::WEuropeStandardTime);
        assert_eq!(tic_type_of("5"), TicType::HistoricMono);
    }
}
