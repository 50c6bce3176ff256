//! Deterministic tenant generation from (users, seed), and for a simulator
//! serving several tenants, the tenant's index.
//!
//! Users are never materialized up front: user `i` is a pure function of the
//! seed and `i`, so a 100,000-user tenant costs a few index maps and its
//! generation is a single cheap pass (licence counts, group memberships).
//! Only users that a test changes are stored (see `directory`).

use crate::model::{SKU_SPE_E3, SimDomain, SimGroup, SimSku, SimUser, UserPurpose, UserType};
use crate::util::{Rng, iso_time};
use std::collections::HashMap;

const FIRST: &[&str] = &[
    "Aaron",
    "Abigail",
    "Adam",
    "Adele",
    "Aisha",
    "Alan",
    "Alex",
    "Alice",
    "Amelia",
    "Amir",
    "Ana",
    "Andrew",
    "Anne",
    "Arjun",
    "Astrid",
    "Ben",
    "Bianca",
    "Boris",
    "Brian",
    "Camille",
    "Carla",
    "Carlos",
    "Chen",
    "Chloe",
    "Chris",
    "Claire",
    "Daniel",
    "Diana",
    "Diego",
    "Dmitri",
    "Elena",
    "Elif",
    "Emma",
    "Eric",
    "Fatima",
    "Felix",
    "Fiona",
    "Francesca",
    "Gabriel",
    "Grace",
    "Hana",
    "Hannah",
    "Hiro",
    "Hugo",
    "Ian",
    "Ines",
    "Isaac",
    "Ivan",
    "Jack",
    "Jana",
    "Javier",
    "Jin",
    "Joao",
    "Johanna",
    "Jonas",
    "Julia",
    "Karim",
    "Katja",
    "Kenji",
    "Laura",
    "Leila",
    "Leon",
    "Lina",
    "Lucas",
    "Lucy",
    "Luis",
    "Maja",
    "Marco",
    "Maria",
    "Mark",
    "Martin",
    "Megan",
    "Mei",
    "Miguel",
    "Mila",
    "Mohammed",
    "Nadia",
    "Nathan",
    "Nina",
    "Noah",
    "Olga",
    "Oliver",
    "Omar",
    "Paula",
    "Pedro",
    "Petra",
    "Priya",
    "Rafael",
    "Rahul",
    "Rania",
    "Robert",
    "Rosa",
    "Sam",
    "Sara",
    "Sebastian",
    "Sofia",
    "Stefan",
    "Tariq",
    "Tessa",
    "Thomas",
    "Tobias",
    "Uma",
    "Valentina",
    "Victor",
    "Wei",
    "William",
    "Yara",
    "Yusuf",
    "Zara",
    "Zoe",
];

const LAST: &[&str] = &[
    "Abbott",
    "Adeyemi",
    "Alvarez",
    "Andersen",
    "Baker",
    "Banerjee",
    "Becker",
    "Bergstrom",
    "Bianchi",
    "Brooks",
    "Castillo",
    "Chang",
    "Clarke",
    "Costa",
    "Dubois",
    "Duarte",
    "Eriksen",
    "Fischer",
    "Fontaine",
    "Garcia",
    "Gonzalez",
    "Gupta",
    "Hansen",
    "Hartmann",
    "Hoffman",
    "Horvat",
    "Ibrahim",
    "Ivanova",
    "Jansen",
    "Jensen",
    "Kaur",
    "Keller",
    "Khan",
    "Kim",
    "Kowalski",
    "Kruger",
    "Larsen",
    "Laurent",
    "Lee",
    "Lindqvist",
    "Lopez",
    "Madsen",
    "Mahmoud",
    "Martin",
    "Meyer",
    "Moreau",
    "Murphy",
    "Nakamura",
    "Nguyen",
    "Nielsen",
    "Novak",
    "Okafor",
    "Olsen",
    "Ortiz",
    "Park",
    "Patel",
    "Perez",
    "Petrov",
    "Quinn",
    "Ramos",
    "Rao",
    "Reyes",
    "Richter",
    "Rossi",
    "Sato",
    "Schmidt",
    "Schneider",
    "Silva",
    "Singh",
    "Smith",
    "Sokolova",
    "Suzuki",
    "Tanaka",
    "Taylor",
    "Thompson",
    "Torres",
    "Ueda",
    "Vargas",
    "Virtanen",
    "Wagner",
    "Walsh",
    "Weber",
    "Wilson",
    "Wong",
    "Yamamoto",
    "Yilmaz",
    "Young",
    "Zhang",
    "Zimmermann",
];

const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Marketing",
    "Engineering",
    "Finance",
    "Human Resources",
    "Operations",
    "Legal",
    "Customer Support",
];

const TITLES: &[&str] = &[
    "Account Executive",
    "Analyst",
    "Consultant",
    "Coordinator",
    "Designer",
    "Engineer",
    "Senior Engineer",
    "Specialist",
    "Associate",
    "Administrator",
    "Accountant",
    "Representative",
];

const OFFICES: &[&str] = &[
    "Seattle", "New York", "London", "Berlin", "Munich", "Dublin", "Austin", "Remote",
];

const SLUGS: &[&str] = &[
    "contoso",
    "fabrikam",
    "northwind",
    "adatum",
    "litware",
    "tailspin",
    "wingtip",
    "woodgrove",
    "proseware",
    "lucerne",
    "relecloud",
    "treyresearch",
    "alpineski",
    "fourthcoffee",
    "wideworld",
    "blueyonder",
];

const EXTERNAL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "partner-solutions.com",
    "globex.example",
    "initech.example",
    "umbrella-consulting.net",
];

const SHARED_WORDS: &[&str] = &[
    "info",
    "support",
    "sales",
    "billing",
    "careers",
    "press",
    "helpdesk",
    "accounts",
    "reception",
    "orders",
];
const ROOM_WORDS: &[&str] = &[
    "aspen", "birch", "cedar", "maple", "oak", "pine", "rowan", "willow",
];
const EQUIPMENT_WORDS: &[&str] = &["projector", "van", "camera", "laptop-pool", "car"];
const PROJECTS: &[&str] = &[
    "Apollo",
    "Borealis",
    "Cobalt",
    "Delta",
    "Ember",
    "Falcon",
    "Granite",
    "Horizon",
    "Indigo",
    "Jupiter",
    "Keystone",
    "Lighthouse",
    "Meridian",
    "Nimbus",
    "Orion",
    "Phoenix",
];
const APPS: &[&str] = &[
    "VPN",
    "Salesforce",
    "Jira",
    "Tableau",
    "Workday",
    "SAP",
    "GitHub",
    "ServiceNow",
];

/// True if `word` is one of the generated first names (any case).
pub(crate) fn is_first_name(word: &str) -> bool {
    FIRST.iter().any(|f| f.eq_ignore_ascii_case(word))
}

/// Branching factor of the generated management tree.
const FANOUT: u64 = 8;
/// 2019-01-01T00:00:00Z; generated objects are created after it.
const EPOCH: u64 = 1_546_300_800;

// Generation streams: independent so cheap passes (licences, memberships)
// need not generate whole users.
const S_KIND: u64 = 1;
const S_LICENCE: u64 = 2;
const S_DETAIL: u64 = 3;
const S_GROUPS: u64 = 4;
const S_GROUP_DEF: u64 = 5;
const S_ID: u64 = 6;
const S_ADDR: u64 = 7;
const S_TENANT: u64 = 8;
const S_QUIRK: u64 = 9;

/// What real tenants have and a tidy generator would not make: each is rare, and a
/// tenant of 40 users or more has at least one of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quirk {
    None,
    /// A shared or room mailbox with a licence and sign-in allowed (typed right only by
    /// its mailbox purpose).
    SignsIn,
    /// `mail` still holds the old address; the `SMTP:` primary is another one.
    PrimaryNotMail,
    /// The same primary address as the user before it (a sync error in the tenant).
    SharesAddress,
    /// An `smtp:` alias that is the user before it's primary address.
    AliasOfOther,
}

struct PersonAddr {
    first: &'static str,
    last: &'static str,
    sfx: String,
    local: String,
    joined: String,
    pd: usize,
    mail: String,
    upn: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Member,
    DisabledMember,
    UnlicensedMember,
    Guest,
    Shared,
    Room,
    Equipment,
}

impl Kind {
    fn is_person_member(self) -> bool {
        matches!(
            self,
            Kind::Member | Kind::DisabledMember | Kind::UnlicensedMember
        )
    }
}

struct SkuDef {
    id: &'static str,
    part: &'static str,
    plans: &'static [(&'static str, &'static str)],
}

const SKUS: &[SkuDef] = &[
    SkuDef {
        id: SKU_SPE_E3,
        part: "SPE_E3",
        plans: &[
            (
                "efb87545-963c-4e0d-99df-69c6916d9eb0",
                "EXCHANGE_S_ENTERPRISE",
            ),
            (
                "5dbe027f-2339-4123-9542-606e4d348a72",
                "SHAREPOINTENTERPRISE",
            ),
            ("57ff2da0-773e-42df-b2af-ffb7a2317929", "TEAMS1"),
        ],
    },
    SkuDef {
        id: "06ebc4ee-1bb5-47dd-8120-11324bc54e06",
        part: "SPE_E5",
        plans: &[
            (
                "efb87545-963c-4e0d-99df-69c6916d9eb0",
                "EXCHANGE_S_ENTERPRISE",
            ),
            ("57ff2da0-773e-42df-b2af-ffb7a2317929", "TEAMS1"),
            ("4828c8ec-dc2e-4779-b502-87ac9ce28ab7", "MCOEV"),
        ],
    },
    SkuDef {
        id: "6fd2c87f-b296-42f0-b197-1e91e994b900",
        part: "ENTERPRISEPACK",
        plans: &[
            (
                "efb87545-963c-4e0d-99df-69c6916d9eb0",
                "EXCHANGE_S_ENTERPRISE",
            ),
            (
                "5dbe027f-2339-4123-9542-606e4d348a72",
                "SHAREPOINTENTERPRISE",
            ),
        ],
    },
    SkuDef {
        id: "4b9405b0-7788-4568-add1-99614e613b69",
        part: "EXCHANGESTANDARD",
        plans: &[(
            "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
            "EXCHANGE_S_STANDARD",
        )],
    },
    SkuDef {
        id: "f30db892-07e9-47e9-837c-80727f46fd3d",
        part: "FLOW_FREE",
        plans: &[("50e68c76-46c6-4674-81f9-75456511b170", "FLOW_P2_VIRAL")],
    },
    SkuDef {
        id: "a403ebcc-fae0-4ca2-8c8c-7a907fd6c235",
        part: "POWER_BI_STANDARD",
        plans: &[("2049e525-b859-401b-b2a0-e0a31c4b1fe4", "BI_AZURE_P0")],
    },
];

/// A directory member reference: users and groups live in separate ordinal
/// spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum MemberRef {
    User(u64),
    Group(u64),
}

/// The generated, immutable starting point of a tenant.
#[derive(Clone)]
pub(crate) struct Blueprint {
    seed: u64,
    pub n: u64,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub org_name: String,
    pub initial_domain: String,
    pub domains: Vec<SimDomain>,
    /// Verified, Email-capable custom domains, default first.
    pub mail_domains: Vec<String>,
    /// A verified domain without Email (UPNs only).
    upn_only_domain: String,
    perm_a: u64,
    perm_b: u64,
}

/// Everything the one-off generation pass produces besides the blueprint.
pub(crate) struct Generated {
    pub blueprint: Blueprint,
    pub skus: Vec<SimSku>,
    pub groups: Vec<SimGroup>,
    /// Direct members of each base group, by group ordinal.
    pub members: Vec<Vec<MemberRef>>,
    /// Base user ordinal by object id.
    pub user_ids: HashMap<u128, u32>,
    /// Base user ordinal by hash of the lower-cased UPN.
    pub user_upns: HashMap<u64, u32>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Blueprint {
    /// Tenant `index` of a simulator serving several. Tenant 0 is exactly the
    /// single tenant of (n, seed); each other tenant has a seed of its own and
    /// a `t{index}` prefix on its domain names, because a slug and a four-digit
    /// tag alone would repeat among a thousand tenants.
    pub(crate) fn for_tenant(n: u64, seed: u64, index: usize) -> Blueprint {
        if index == 0 {
            Blueprint::new(n, seed, "")
        } else {
            let seed = Rng::new(seed, S_TENANT, index as u64).next();
            Blueprint::new(n, seed, &format!("t{index}"))
        }
    }

    /// Identity, names and domains only: cheap, whatever `n` is.
    fn new(n: u64, seed: u64, prefix: &str) -> Blueprint {
        let mut r = Rng::new(seed, 0, 0);
        let slug = *r.pick(SLUGS);
        let tag = format!("{:04x}", r.below(0x10000));
        let tenant_id = r.guid().to_string();
        let client_id = r.guid().to_string();
        // Real secrets are 40 characters and contain '~', '.', '_' and '-',
        // which catches clients that forget to form-encode them.
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
        let mut secret: String = (0..3).map(|_| *r.pick(ALPHA) as char).collect();
        secret.push_str("8Q~");
        secret.extend((0..34).map(|_| *r.pick(ALPHA) as char));
        let mut org = slug.to_string();
        org[..1].make_ascii_uppercase();
        let org_name = format!(
            "{org} {}",
            r.pick(&["Ltd", "Inc.", "GmbH", "Group", "Corporation"])
        );
        // Initial domain names are letters and digits only.
        let initial_domain = format!("{prefix}{slug}{tag}.onmicrosoft.com");
        let base = if prefix.is_empty() {
            format!("{slug}-{tag}")
        } else {
            format!("{prefix}-{slug}-{tag}")
        };
        let dom = |id: String, default: bool, verified: bool, services: &[&str]| SimDomain {
            id,
            authentication_type: "Managed".into(),
            is_default: default,
            is_initial: false,
            is_verified: verified,
            is_root: true,
            supported_services: services.iter().map(|s| s.to_string()).collect(),
        };
        let mail_domains = vec![
            format!("{base}.com"),
            format!("{base}.co.uk"),
            format!("{base}.de"),
        ];
        let upn_only_domain = format!("{base}.dev");
        let domains = vec![
            dom(
                mail_domains[0].clone(),
                true,
                true,
                &["Email", "OfficeCommunicationsOnline"],
            ),
            dom(
                mail_domains[1].clone(),
                false,
                true,
                &["Email", "OfficeCommunicationsOnline"],
            ),
            dom(mail_domains[2].clone(), false, true, &["Email"]),
            dom(
                upn_only_domain.clone(),
                false,
                true,
                &["OfficeCommunicationsOnline", "Intune"],
            ),
            dom(format!("{base}.org"), false, false, &[]),
            SimDomain {
                is_initial: true,
                ..dom(
                    initial_domain.clone(),
                    false,
                    true,
                    &["Email", "OfficeCommunicationsOnline"],
                )
            },
        ];
        let m = (FIRST.len() * LAST.len()) as u64;
        let mut perm_a = 7919 + 2 * r.below(1000);
        while gcd(perm_a, m) != 1 {
            perm_a += 1;
        }
        Blueprint {
            seed,
            n,
            tenant_id,
            client_id,
            client_secret: secret,
            org_name,
            initial_domain,
            domains,
            mail_domains,
            upn_only_domain,
            perm_a,
            perm_b: r.below(m),
        }
    }

    pub(crate) fn user_guid(&self, i: u64) -> uuid::Uuid {
        Rng::new(self.seed, S_ID, i).guid()
    }

    pub(crate) fn user_id(&self, i: u64) -> String {
        self.user_guid(i).to_string()
    }

    fn is_manager_slot(&self, i: u64) -> bool {
        i * FANOUT + 1 < self.n
    }

    pub(crate) fn kind(&self, i: u64) -> Kind {
        if self.is_manager_slot(i) || i == 0 {
            return Kind::Member;
        }
        // Small tenants still get one of every kind: the last indices are
        // leaves of the management tree, so forcing them costs nothing.
        if self.n >= 12 {
            match self.n - 1 - i {
                0 => return Kind::Guest,
                1 => return Kind::Shared,
                2 => return Kind::Room,
                3 => return Kind::Equipment,
                4 => return Kind::DisabledMember,
                5 => return Kind::UnlicensedMember,
                6..=9 if self.n >= 40 => return Kind::Member,
                _ => {}
            }
        }
        let roll = Rng::new(self.seed, S_KIND, i).below(1000);
        match roll {
            0..50 => Kind::Guest,
            50..80 => Kind::Shared,
            80..95 => Kind::Room,
            95..100 => Kind::Equipment,
            100..130 => Kind::DisabledMember,
            130..160 => Kind::UnlicensedMember,
            _ => Kind::Member,
        }
    }

    fn licences(&self, i: u64, kind: Kind) -> Vec<&'static str> {
        let mut r = Rng::new(self.seed, S_LICENCE, i);
        let licensed = match kind {
            Kind::Member => true,
            Kind::DisabledMember => r.chance(500),
            Kind::Shared | Kind::Room if self.quirk(i) == Quirk::SignsIn => {
                return vec![SKUS[3].id];
            }
            _ => false,
        };
        if !licensed {
            return vec![];
        }
        let main = match r.below(100) {
            0..65 => 0,
            65..80 => 1,
            80..92 => 2,
            _ => 3,
        };
        let mut out = vec![SKUS[main].id];
        if r.chance(250) {
            out.push(SKUS[4].id);
        }
        if r.chance(100) {
            out.push(SKUS[5].id);
        }
        out
    }

    /// The quirk of base user `i` (see [`Quirk`]).
    pub(crate) fn quirk(&self, i: u64) -> Quirk {
        let kind = self.kind(i);
        let person = |k: Kind| matches!(k, Kind::Member | Kind::DisabledMember);
        // The user before must be a plain person with a mailbox to share an address with.
        let after_person =
            || i > 0 && person(self.kind(i - 1)) && self.person_quirk(i - 1) == Quirk::None;
        match kind {
            Kind::Shared | Kind::Room => {
                let forced = self.n >= 12 && self.n - 1 - i == 1;
                if forced || Rng::new(self.seed, S_QUIRK, i).chance(100) {
                    Quirk::SignsIn
                } else {
                    Quirk::None
                }
            }
            k if person(k) => match self.person_quirk(i) {
                Quirk::SharesAddress | Quirk::AliasOfOther if !after_person() => Quirk::None,
                q => q,
            },
            _ => Quirk::None,
        }
    }

    /// A person's quirk as drawn (before checking the user before it).
    fn person_quirk(&self, i: u64) -> Quirk {
        if self.n >= 40 && !self.is_manager_slot(i) && i > 0 {
            match self.n - 1 - i {
                6 => return Quirk::PrimaryNotMail,
                7 => return Quirk::AliasOfOther,
                9 => return Quirk::SharesAddress,
                _ => {}
            }
        }
        match Rng::new(self.seed, S_QUIRK, i).below(1000) {
            0..20 => Quirk::PrimaryNotMail,
            20..22 => Quirk::SharesAddress,
            22..27 => Quirk::AliasOfOther,
            _ => Quirk::None,
        }
    }

    pub(crate) fn manager(&self, i: u64) -> Option<u64> {
        (i > 0 && self.kind(i).is_person_member()).then(|| (i - 1) / FANOUT)
    }

    fn department(&self, i: u64) -> Option<&'static str> {
        if i == 0 {
            return Some("Executive");
        }
        let mut a = i;
        while a > FANOUT {
            a = (a - 1) / FANOUT;
        }
        Some(DEPARTMENTS[((a - 1) as usize) % DEPARTMENTS.len()])
    }

    fn names(&self, i: u64) -> (&'static str, &'static str, u64) {
        let m = (FIRST.len() * LAST.len()) as u64;
        let c = (i % m * self.perm_a + self.perm_b) % m;
        let first = FIRST[(c % FIRST.len() as u64) as usize];
        let last = LAST[(c / FIRST.len() as u64) as usize];
        (first, last, i / m)
    }

    /// Base user `i`, exactly as generated.
    pub(crate) fn user(&self, i: u64) -> SimUser {
        let kind = self.kind(i);
        let mut r = Rng::new(self.seed, S_DETAIL, i);
        let id = self.user_id(i);
        let created = iso_time(EPOCH + i * 1800 + r.below(1800), "Z");
        let licences: Vec<String> = self
            .licences(i, kind)
            .into_iter()
            .map(String::from)
            .collect();
        let onms = &self.initial_domain;
        match kind {
            Kind::Shared | Kind::Room | Kind::Equipment => {
                let (w, local, mail) = self.resource_addr(i, kind);
                let mut d = w.replace('-', " ");
                d[..1].make_ascii_uppercase();
                let (display, purpose) = match kind {
                    Kind::Shared => (format!("{d} Mailbox {i}"), UserPurpose::Shared),
                    Kind::Room => (
                        format!("Room {d} {}.{:02}", 1 + r.below(5), i % 100),
                        UserPurpose::Room,
                    ),
                    _ => (format!("{d} {i}"), UserPurpose::Equipment),
                };
                SimUser {
                    id,
                    user_principal_name: mail.clone(),
                    display_name: display,
                    mail: Some(mail.clone()),
                    mail_nickname: Some(local.clone()),
                    proxy_addresses: vec![format!("smtp:{local}@{onms}"), format!("SMTP:{mail}")],
                    account_enabled: self.quirk(i) == Quirk::SignsIn,
                    assigned_licenses: licences,
                    department: (kind == Kind::Shared)
                        .then(|| *r.pick(DEPARTMENTS))
                        .map(String::from),
                    office_location: (kind != Kind::Shared).then(|| r.pick(OFFICES).to_string()),
                    created_date_time: created,
                    user_purpose: Some(purpose),
                    usage_location: Some("US".into()),
                    ..SimUser::default()
                }
            }
            Kind::Guest => {
                let (first, last, mail) = self.guest_addr(i);
                SimUser {
                    id,
                    user_principal_name: self.guest_upn(&mail),
                    display_name: format!("{first} {last}"),
                    given_name: Some(first.into()),
                    surname: Some(last.into()),
                    mail: Some(mail.clone()),
                    mail_nickname: Some(mail.replace('@', "_")),
                    proxy_addresses: vec![format!("SMTP:{mail}")],
                    other_mails: vec![mail],
                    account_enabled: true,
                    user_type: UserType::Guest,
                    company_name: r.chance(500).then(|| "Partner Solutions".to_string()),
                    created_date_time: created,
                    external_user_state: Some(
                        if r.chance(900) {
                            "Accepted"
                        } else {
                            "PendingAcceptance"
                        }
                        .into(),
                    ),
                    creation_type: Some("Invitation".into()),
                    ..SimUser::default()
                }
            }
            Kind::Member | Kind::DisabledMember | Kind::UnlicensedMember => {
                self.person(i, kind, id, created, licences, &mut r)
            }
        }
    }

    fn suffix(suffix: u64) -> String {
        if suffix > 0 {
            (suffix + 1).to_string()
        } else {
            String::new()
        }
    }

    /// Addresses of a person (member). Drawn from their own stream so the
    /// UPN index can be built without generating whole users.
    fn person_addr(&self, i: u64) -> PersonAddr {
        let mut r = Rng::new(self.seed, S_ADDR, i);
        let (first, last, suffix) = self.names(i);
        let sfx = Self::suffix(suffix);
        let (fl, ll) = (first.to_lowercase(), last.to_lowercase());
        // Mixed case happens in real tenants; clients must compare
        // addresses case-insensitively.
        let local = if r.chance(100) {
            format!("{first}.{last}{sfx}")
        } else {
            format!("{fl}.{ll}{sfx}")
        };
        let joined = format!("{fl}{ll}{sfx}");
        let pd = match r.below(100) {
            0..75 => 0,
            75..90 => 1,
            90..97 => 2,
            _ => 3,
        };
        let primary_domain = if pd == 3 {
            &self.initial_domain
        } else {
            &self.mail_domains[pd]
        };
        let other_domain = &self.mail_domains[(pd + 1) % 3];
        let mail = format!("{local}@{primary_domain}");
        let upn = match r.below(100) {
            0..55 => mail.clone(),
            55..70 => format!("{local}@{other_domain}"),
            70..80 => format!("{joined}@{primary_domain}"),
            80..90 => format!("{local}@{}", self.upn_only_domain),
            _ => format!("{local}@{}", self.initial_domain),
        };
        PersonAddr {
            first,
            last,
            sfx,
            local,
            joined,
            pd,
            mail,
            upn,
        }
    }

    /// (word, local part, address) of a shared, room or equipment mailbox.
    fn resource_addr(&self, i: u64, kind: Kind) -> (&'static str, String, String) {
        let mut r = Rng::new(self.seed, S_ADDR, i);
        let (w, local) = match kind {
            Kind::Shared => {
                let w = *r.pick(SHARED_WORDS);
                (w, format!("{w}{i}"))
            }
            Kind::Room => {
                let w = *r.pick(ROOM_WORDS);
                (w, format!("room-{w}-{i}"))
            }
            _ => {
                let w = *r.pick(EQUIPMENT_WORDS);
                (w, format!("equip-{w}-{i}"))
            }
        };
        let domain = &self.mail_domains[if r.chance(800) { 0 } else { 1 }];
        let mail = format!("{local}@{domain}");
        (w, local, mail)
    }

    fn guest_addr(&self, i: u64) -> (&'static str, &'static str, String) {
        let mut r = Rng::new(self.seed, S_ADDR, i);
        let (first, last, suffix) = self.names(i);
        let sfx = Self::suffix(suffix);
        let ext = r.pick(EXTERNAL_DOMAINS);
        let mail = format!(
            "{}.{}{sfx}@{ext}",
            first.to_lowercase(),
            last.to_lowercase()
        );
        (first, last, mail)
    }

    fn guest_upn(&self, mail: &str) -> String {
        format!("{}#EXT#@{}", mail.replace('@', "_"), self.initial_domain)
    }

    /// The UPN of base user `i`, without generating the whole user.
    pub(crate) fn upn(&self, i: u64) -> String {
        match self.kind(i) {
            Kind::Guest => self.guest_upn(&self.guest_addr(i).2),
            k @ (Kind::Shared | Kind::Room | Kind::Equipment) => self.resource_addr(i, k).2,
            _ => self.person_addr(i).upn,
        }
    }

    fn person(
        &self,
        i: u64,
        kind: Kind,
        id: String,
        created: String,
        licences: Vec<String>,
        r: &mut Rng,
    ) -> SimUser {
        let PersonAddr {
            first,
            last,
            sfx,
            local,
            joined,
            pd,
            mail,
            upn,
        } = self.person_addr(i);
        let primary_domain = if pd == 3 {
            &self.initial_domain
        } else {
            &self.mail_domains[pd]
        };
        let other_domain = &self.mail_domains[(pd + 1) % 3];
        let (usage, lang) = match pd {
            1 => ("GB", "en-GB"),
            2 => ("DE", "de-DE"),
            _ => ("US", "en-US"),
        };
        let has_mailbox = kind != Kind::UnlicensedMember;
        let mut proxies = Vec::new();
        if has_mailbox {
            proxies.push(format!("SMTP:{mail}"));
            if !mail.ends_with(self.initial_domain.as_str()) {
                proxies.push(format!("smtp:{local}@{}", self.initial_domain));
            }
            if r.chance(400) {
                proxies.push(format!("smtp:{joined}@{primary_domain}"));
            }
            if r.chance(300) {
                proxies.push(format!("smtp:{local}@{other_domain}"));
            }
            let upn_domain = upn.rsplit('@').next().unwrap_or("");
            if upn != mail
                && r.chance(500)
                && (self.mail_domains.iter().any(|d| d == upn_domain))
                && !proxies.iter().any(|p| p[5..].eq_ignore_ascii_case(&upn))
            {
                proxies.push(format!("smtp:{upn}"));
            }
            if !licences.is_empty() && r.chance(800) {
                proxies.push(format!("SIP:{upn}"));
            }
            if r.chance(300) {
                let g = Rng::new(self.seed, S_DETAIL + 100, i)
                    .guid()
                    .simple()
                    .to_string();
                proxies.push(format!(
                    "X500:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn={g}-{}",
                    joined.chars().take(12).collect::<String>()
                ));
            }
            match self.quirk(i) {
                Quirk::PrimaryNotMail => {
                    // The primary moved on; `mail` still says the old address.
                    let new = format!("{joined}@{primary_domain}");
                    proxies.retain(|p| !p[5.min(p.len())..].eq_ignore_ascii_case(&new));
                    for p in proxies.iter_mut() {
                        if p.starts_with("SMTP:") {
                            *p = format!("smtp:{}", &p[5..]);
                        }
                    }
                    proxies.push(format!("SMTP:{new}"));
                }
                Quirk::AliasOfOther => {
                    proxies.push(format!("smtp:{}", self.person_addr(i - 1).mail));
                }
                Quirk::SharesAddress => {
                    let other = self.person_addr(i - 1).mail;
                    proxies.retain(|p| !p.starts_with("SMTP:"));
                    proxies.push(format!("SMTP:{other}"));
                }
                _ => {}
            }
            // Graph does not promise an order; the primary is not always first.
            let k = r.below(proxies.len() as u64) as usize;
            proxies.rotate_left(k);
        }
        let mail = if self.quirk(i) == Quirk::SharesAddress && has_mailbox {
            self.person_addr(i - 1).mail
        } else {
            mail
        };
        let manager_slot = self.is_manager_slot(i);
        let title = if i == 0 {
            "Chief Executive Officer".to_string()
        } else if manager_slot {
            format!(
                "{} {}",
                if i <= FANOUT { "Director," } else { "Manager," },
                self.department(i).unwrap_or("Operations")
            )
        } else {
            r.pick(TITLES).to_string()
        };
        SimUser {
            id,
            user_principal_name: upn,
            display_name: if sfx.is_empty() {
                format!("{first} {last}")
            } else {
                format!("{first} {last} ({sfx})")
            },
            given_name: Some(first.into()),
            surname: Some(last.into()),
            mail: has_mailbox.then(|| mail.clone()),
            mail_nickname: Some(local.clone()),
            proxy_addresses: proxies,
            other_mails: vec![],
            account_enabled: kind != Kind::DisabledMember,
            user_type: UserType::Member,
            assigned_licenses: licences,
            company_name: r.chance(900).then(|| self.org_name.clone()),
            job_title: Some(title),
            department: self.department(i).map(String::from),
            office_location: Some(r.pick(OFFICES).to_string()),
            business_phones: vec![format!("+1 425 555 {:04}", i % 10_000)],
            mobile_phone: r
                .chance(300)
                .then(|| format!("+1 206 555 {:04}", (i * 7) % 10_000)),
            preferred_language: Some(lang.into()),
            usage_location: Some(usage.into()),
            employee_id: r.chance(800).then(|| format!("E{}", 100_000 + i)),
            created_date_time: created,
            external_user_state: None,
            creation_type: None,
            user_purpose: has_mailbox.then_some(UserPurpose::User),
            manager_id: self.manager(i).map(|m| self.user_id(m)),
        }
    }

    fn group_count(&self) -> u64 {
        (self.n / 300).max(8)
    }

    fn group(&self, g: u64) -> SimGroup {
        let mut r = Rng::new(self.seed, S_GROUP_DEF, g);
        let id = r.guid().to_string();
        let created = iso_time(EPOCH + g * 86_400 + r.below(86_400), "Z");
        let n = g / 8;
        let sfx = if n > 0 {
            format!(" {}", n + 1)
        } else {
            String::new()
        };
        let nsfx = if n > 0 {
            (n + 1).to_string()
        } else {
            String::new()
        };
        let dept = DEPARTMENTS[(g as usize / 2) % DEPARTMENTS.len()];
        let dslug = dept.to_lowercase().replace(' ', "-");
        let d0 = &self.mail_domains[0];
        let (display, nick, kind) = match g % 8 {
            0 | 4 => (
                format!("{dept} Team{sfx}"),
                format!("{dslug}-team{nsfx}"),
                0,
            ),
            1 | 5 => {
                let p = PROJECTS[(g as usize / 2) % PROJECTS.len()];
                (
                    format!("Project {p}{sfx}"),
                    format!("project-{}{nsfx}", p.to_lowercase()),
                    1,
                )
            }
            2 => (
                format!("{dept} Managers{sfx}"),
                format!("{dslug}-managers{nsfx}"),
                2,
            ),
            3 | 6 => {
                let a = APPS[(g as usize / 3) % APPS.len()];
                (
                    format!("App - {a} Users{sfx}"),
                    format!("app-{}-users{nsfx}", a.to_lowercase()),
                    3,
                )
            }
            _ => (format!("All Staff{sfx}"), format!("all-staff{nsfx}"), 0),
        };
        let mut group = match kind {
            0 => SimGroup::distribution_list(&display, &format!("{nick}@{d0}")),
            1 => SimGroup::microsoft365(&display, &format!("{nick}@{d0}")),
            2 => SimGroup::mail_enabled_security(&display, &format!("{nick}@{d0}")),
            _ => SimGroup {
                mail_nickname: nick.clone(),
                ..SimGroup::security(&display)
            },
        };
        if group.mail_enabled {
            group
                .proxy_addresses
                .push(format!("smtp:{nick}@{}", self.initial_domain));
        }
        if kind == 1 && r.chance(500) {
            group.visibility = Some("Public".into());
        }
        group.id = id;
        group.created_date_time = created;
        group.description = Some(format!("{display} ({})", self.org_name));
        group
    }
}

impl Generated {
    #[cfg(test)]
    pub(crate) fn new(n: usize, seed: u64) -> Generated {
        Generated::from_blueprint(Blueprint::for_tenant(n as u64, seed, 0))
    }

    /// The one pass over all users: licence counts, group memberships and
    /// the id and UPN indexes.
    pub(crate) fn from_blueprint(bp: Blueprint) -> Generated {
        let n = bp.n;
        let gcount = bp.group_count();
        let groups: Vec<SimGroup> = (0..gcount).map(|g| bp.group(g)).collect();
        let mut members: Vec<Vec<MemberRef>> = vec![Vec::new(); gcount as usize];
        let mut consumed = [0i64; SKUS.len()];
        let mut user_ids = HashMap::with_capacity(n as usize);
        let mut user_upns = HashMap::with_capacity(n as usize);
        let unified: Vec<u64> = (0..gcount).filter(|g| matches!(g % 8, 1 | 5)).collect();
        for i in 0..n {
            let kind = bp.kind(i);
            for sku in bp.licences(i, kind) {
                if let Some(k) = SKUS.iter().position(|s| s.id == sku) {
                    consumed[k] += 1;
                }
            }
            user_ids.insert(bp.user_guid(i).as_u128(), i as u32);
            let mut r = Rng::new(bp.seed, S_GROUPS, i);
            let picks: Vec<u64> = match kind {
                Kind::Guest => (0..1 + r.below(2)).map(|_| *r.pick(&unified)).collect(),
                k if k.is_person_member() => {
                    let count = 1 + r.below(3);
                    let mut v = Vec::new();
                    for _ in 0..count {
                        let g = r.below(gcount);
                        if g % 8 != 7 || r.chance(300) {
                            v.push(g);
                        }
                    }
                    v
                }
                _ => vec![],
            };
            for (k, g) in picks.iter().enumerate() {
                if !picks[..k].contains(g) {
                    members[*g as usize].push(MemberRef::User(i));
                }
            }
        }
        // UPNs need the full user; still one cheap pass.
        for i in 0..n {
            user_upns.insert(crate::util::hash_lower(&bp.upn(i)), i as u32);
        }
        for g in 0..gcount {
            if g % 8 == 7 {
                // "All Staff" lists nest the team lists and a mail-enabled
                // security group, and each one nests the previous one, so
                // transitive membership goes several levels deep.
                let mut nested = vec![g - 7, g - 3, g - 5];
                if g >= 15 {
                    nested.push(g - 8);
                }
                for c in nested {
                    members[g as usize].push(MemberRef::Group(c));
                }
            }
            if members[g as usize].is_empty() && n > 0 {
                members[g as usize].push(MemberRef::User(0));
            }
        }
        let skus = SKUS
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let used = consumed[k];
                SimSku {
                    sku_id: s.id.to_string(),
                    sku_part_number: s.part.to_string(),
                    capability_status: "Enabled".into(),
                    applies_to: "User".into(),
                    consumed_units: used,
                    prepaid_enabled: if s.part == "FLOW_FREE" {
                        10_000
                    } else {
                        (used + used / 10 + 9) / 5 * 5
                    },
                    prepaid_suspended: 0,
                    prepaid_warning: 0,
                    prepaid_locked_out: 0,
                    service_plans: s
                        .plans
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect(),
                }
            })
            .collect();
        Generated {
            blueprint: bp,
            skus,
            groups,
            members,
            user_ids,
            user_upns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_for_same_seed() {
        let a = Generated::new(300, 42);
        let b = Generated::new(300, 42);
        let c = Generated::new(300, 43);
        assert_eq!(a.blueprint.tenant_id, b.blueprint.tenant_id);
        assert_eq!(a.blueprint.client_secret, b.blueprint.client_secret);
        assert_ne!(a.blueprint.tenant_id, c.blueprint.tenant_id);
        for i in 0..300 {
            assert_eq!(a.blueprint.user(i), b.blueprint.user(i));
        }
        assert_eq!(a.groups, b.groups);
        for i in 0..300 {
            assert_eq!(a.blueprint.upn(i), a.blueprint.user(i).user_principal_name);
        }
        assert_eq!(a.members, b.members);
        assert_eq!(a.skus, b.skus);
    }

    #[test]
    fn tenants_have_their_own_identity_domains_and_users() {
        let first = Blueprint::for_tenant(50, 1, 0);
        assert_eq!(
            first.initial_domain,
            Blueprint::new(50, 1, "").initial_domain
        );
        let mut ids = HashSet::new();
        let mut domains = HashSet::new();
        for k in 0..1000 {
            let bp = Blueprint::for_tenant(50, 1, k);
            assert!(ids.insert(bp.tenant_id.clone()));
            assert!(ids.insert(bp.client_id.clone()));
            for d in &bp.domains {
                assert!(domains.insert(d.id.clone()), "tenant {k}: {} again", d.id);
            }
        }
        let second = Blueprint::for_tenant(50, 1, 1);
        assert!(second.initial_domain.starts_with("t1"));
        assert!(second.mail_domains[0].starts_with("t1-"));
        assert_ne!(first.user(0).id, second.user(0).id);
    }

    #[test]
    fn small_tenant_has_every_kind() {
        let g = Generated::new(25, 3);
        let bp = &g.blueprint;
        let users: Vec<SimUser> = (0..25).map(|i| bp.user(i)).collect();
        assert!(users.iter().any(|u| u.user_type == UserType::Guest));
        for p in [
            UserPurpose::User,
            UserPurpose::Shared,
            UserPurpose::Room,
            UserPurpose::Equipment,
        ] {
            assert!(users.iter().any(|u| u.user_purpose == Some(p)), "{p:?}");
        }
        assert!(
            users
                .iter()
                .any(|u| !u.account_enabled && u.user_purpose == Some(UserPurpose::User))
        );
        assert!(
            users
                .iter()
                .any(|u| u.user_type == UserType::Member && u.user_purpose.is_none())
        );
        assert!(users.iter().any(|u| u.assigned_licenses.is_empty()));
        assert!(users.iter().any(|u| u.manager_id.is_some()));
        let kinds: HashSet<_> = g.groups.iter().map(|g| g.kind()).collect();
        assert_eq!(kinds.len(), 4);
        assert!(
            g.members
                .iter()
                .flatten()
                .any(|m| matches!(m, MemberRef::Group(_)))
        );
        assert!(g.groups.len() >= 5);
        assert!(bp.domains.iter().any(|d| !d.is_verified));
        assert!(
            bp.domains
                .iter()
                .any(|d| d.is_verified && !d.supports_email())
        );
    }

    #[test]
    fn addresses_are_unique_and_well_formed() {
        let n = 20_000;
        let g = Generated::new(n, 9);
        let mut upns = HashSet::new();
        let mut addrs = HashSet::new();
        let mut upn_differs = 0;
        let mut quirks = std::collections::HashMap::new();
        for i in 0..n as u64 {
            let u = g.blueprint.user(i);
            assert!(
                upns.insert(u.user_principal_name.to_lowercase()),
                "dup UPN {}",
                u.user_principal_name
            );
            let primaries = u
                .proxy_addresses
                .iter()
                .filter(|p| p.starts_with("SMTP:"))
                .count();
            if u.mail.is_some() {
                assert_eq!(primaries, 1, "{u:?}");
                if g.blueprint.quirk(i) == Quirk::PrimaryNotMail {
                    assert_ne!(u.primary_smtp(), u.mail.as_deref());
                } else {
                    assert_eq!(u.primary_smtp(), u.mail.as_deref());
                }
            }
            if u.mail.as_deref() != Some(u.user_principal_name.as_str()) {
                upn_differs += 1;
            }
            let quirk = g.blueprint.quirk(i);
            *quirks.entry(format!("{quirk:?}")).or_insert(0usize) += 1;
            if matches!(quirk, Quirk::SharesAddress | Quirk::AliasOfOther) {
                // Deliberately another user's address.
                continue;
            }
            for p in &u.proxy_addresses {
                if let Some(a) = p.strip_prefix("SMTP:").or_else(|| p.strip_prefix("smtp:")) {
                    assert!(addrs.insert(a.to_lowercase()), "dup address {a}");
                }
            }
        }
        assert!(upn_differs > n / 5);
        for q in ["SignsIn", "PrimaryNotMail", "SharesAddress", "AliasOfOther"] {
            assert!(
                quirks.get(q).is_some_and(|c| *c > 0),
                "no {q} in {quirks:?}"
            );
        }
        let consumed: i64 = g.skus.iter().map(|s| s.consumed_units).sum();
        let assigned: usize = (0..n as u64)
            .map(|i| g.blueprint.user(i).assigned_licenses.len())
            .sum();
        assert_eq!(consumed as usize, assigned);
        assert!((n / 300..n / 250).contains(&g.groups.len()));
    }
}
