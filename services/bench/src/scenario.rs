//! Scenario names and the `--scenarios` list: `name[:CONCURRENCY]`, comma separated.

/// What a scenario does; see `todoapp-bench --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Health,
    Get,
    GetMissing,
    List,
    Create,
    CreateOnce,
    Update,
    Login,
    Register,
    Mixed,
    LoginBurst,
    FairShare,
    FairShareIdle,
}

pub const ALL: [Kind; 13] = [
    Kind::Health,
    Kind::Get,
    Kind::GetMissing,
    Kind::List,
    Kind::Create,
    Kind::CreateOnce,
    Kind::Update,
    Kind::Login,
    Kind::Register,
    Kind::Mixed,
    Kind::LoginBurst,
    Kind::FairShare,
    Kind::FairShareIdle,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Health => "health",
            Kind::Get => "get",
            Kind::GetMissing => "get-missing",
            Kind::List => "list",
            Kind::Create => "create",
            Kind::CreateOnce => "create-once",
            Kind::Update => "update",
            Kind::Login => "login",
            Kind::Register => "register",
            Kind::Mixed => "mixed",
            Kind::LoginBurst => "login-burst",
            Kind::FairShare => "fair-share",
            Kind::FairShareIdle => "fair-share-idle",
        }
    }

    /// `fair-share` or `fair-share-idle`: the 8 paced users are the headline.
    pub fn is_fair_share(self) -> bool {
        matches!(self, Kind::FairShare | Kind::FairShareIdle)
    }

    fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One scenario to run: what, and how many calls in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub concurrency: usize,
}

impl Spec {
    /// `get` or `get:64`, as written in `--scenarios`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.name(), self.concurrency)
    }
}

/// The default run: the points the original system was measured at, the
/// health ceiling, the blend and the login burst.
pub const DEFAULT_SCENARIOS: &str =
    "health,get,get:1,list,create,update,login:16,register:16,mixed,login-burst:8";

/// Parses `name[:C],…`; a name without `:C` runs at `default_concurrency`.
pub fn parse_list(text: &str, default_concurrency: usize) -> Result<Vec<Spec>, String> {
    let mut specs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, concurrency) = match item.split_once(':') {
            Some((name, c)) => {
                let c: usize = c
                    .parse()
                    .map_err(|_| format!("`{item}`: concurrency must be a positive number"))?;
                (name, c)
            }
            None => (item, default_concurrency),
        };
        let kind = Kind::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
            format!("unknown scenario `{name}` (one of: {})", names.join(", "))
        })?;
        if concurrency == 0 || concurrency > 10_000 {
            return Err(format!("`{item}`: concurrency must be 1 to 10000"));
        }
        specs.push(Spec { kind, concurrency });
    }
    if specs.is_empty() {
        return Err("no scenario given".into());
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_concurrency_overrides() {
        let specs = parse_list("get, list:10 ,login-burst:8", 64).expect("valid");
        assert_eq!(
            specs,
            vec![
                Spec {
                    kind: Kind::Get,
                    concurrency: 64
                },
                Spec {
                    kind: Kind::List,
                    concurrency: 10
                },
                Spec {
                    kind: Kind::LoginBurst,
                    concurrency: 8
                },
            ]
        );
        assert_eq!(specs[1].label(), "list:10");
    }

    #[test]
    fn rejects_unknown_names_and_bad_numbers() {
        assert!(parse_list("gett", 1)
            .unwrap_err()
            .contains("unknown scenario `gett`"));
        assert!(parse_list("get:0", 1).is_err());
        assert!(parse_list("get:x", 1).is_err());
        assert!(parse_list(" , ", 1).is_err());
    }

    #[test]
    fn default_list_parses_and_every_name_round_trips() {
        assert_eq!(
            parse_list(DEFAULT_SCENARIOS, 64).expect("default").len(),
            10
        );
        for kind in ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
    }
}
