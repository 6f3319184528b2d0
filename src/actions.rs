//! Data actions: the permission vocabulary of the Azure FHIR service and the open-source FHIR
//! server (reference §3.1), a set type over them, and a requirement expressed as alternatives
//! ("A|B", "(A&B)|(C&D)", reference §3.2).

use std::fmt;

/// One data action (reference §3.1). The discriminant is the bit of the open-source server's
/// `DataActions` flags enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataAction {
    /// `read`: read, vread, search and history (Azure RBAC `…/resources/read`).
    Read = 0,
    /// `write`: create and update; with `Read`, also patch and the conditional interactions.
    Write = 1,
    /// `delete`: soft delete (the resource keeps its history).
    Delete = 2,
    /// `hardDelete/action`: a delete that purges history (`hardDelete=true`, `$purge-history`);
    /// required on top of `Delete`.
    HardDelete = 3,
    /// `export/action`: bulk `$export` and its status and cancel endpoints.
    Export = 4,
    /// `resourceValidate/action`: `$validate`.
    ResourceValidate = 5,
    /// `reindex/action`: `$reindex`, and creating or updating a `SearchParameter` resource.
    Reindex = 6,
    /// `convertData/action`: `$convert-data`.
    ConvertData = 7,
    /// `editProfileDefinitions/action`: writes and deletes of profile resources
    /// (`StructureDefinition`, `ValueSet`, `CodeSystem`), on top of the CRUD action.
    EditProfileDefinitions = 8,
    /// `import/action`: bulk `$import` and its status and cancel endpoints.
    Import = 9,
    /// `searchparameter/action`: changing the state of search parameters
    /// (`SearchParameter/$status` other than GET).
    SearchParameter = 10,
    /// `bulkOperator/action`: `$bulk-update` and its status and cancel endpoints.
    BulkOperator = 11,
    /// `search/action`: search and history without plain `Read`; granted by the SMART v2 `s`
    /// letter.
    Search = 12,
    /// `readById/action`: read and vread by id only, no search; granted by the SMART v2 `r`
    /// letter.
    ReadById = 13,
    /// Create without plain `Write`; granted by the SMART v2 `c` letter.
    Create = 14,
    /// Update and patch without plain `Write`; granted by the SMART v2 `u` letter.
    Update = 15,
    /// `smart/action`: SMART scopes apply to this principal (role "FHIR SMART User",
    /// reference §4.1). A marker, not a permission: `*` does not include it.
    Smart = 30,
}

impl DataAction {
    /// Every action `*` stands for: bits 0–15. `Smart` is not part of `*` ("Do not include Smart
    /// in the '*' case", reference §3.1).
    pub const ALL: [DataAction; 16] = [
        DataAction::Read,
        DataAction::Write,
        DataAction::Delete,
        DataAction::HardDelete,
        DataAction::Export,
        DataAction::ResourceValidate,
        DataAction::Reindex,
        DataAction::ConvertData,
        DataAction::EditProfileDefinitions,
        DataAction::Import,
        DataAction::SearchParameter,
        DataAction::BulkOperator,
        DataAction::Search,
        DataAction::ReadById,
        DataAction::Create,
        DataAction::Update,
    ];

    /// The name used in `allowedDataActions` (ARM casing, e.g. `Read`, `HardDelete`).
    pub fn name(self) -> &'static str {
        match self {
            DataAction::Read => "Read",
            DataAction::Write => "Write",
            DataAction::Delete => "Delete",
            DataAction::HardDelete => "HardDelete",
            DataAction::Export => "Export",
            DataAction::ResourceValidate => "ResourceValidate",
            DataAction::Reindex => "Reindex",
            DataAction::ConvertData => "ConvertData",
            DataAction::EditProfileDefinitions => "EditProfileDefinitions",
            DataAction::Import => "Import",
            DataAction::SearchParameter => "SearchParameter",
            DataAction::BulkOperator => "BulkOperator",
            DataAction::Search => "Search",
            DataAction::ReadById => "ReadById",
            DataAction::Create => "Create",
            DataAction::Update => "Update",
            DataAction::Smart => "Smart",
        }
    }

    /// Parses an ARM `allowedDataActions` value or a `roles.json` name, case-insensitively
    /// (`Read`, `read`, `hardDelete`, `HardDelete`). `*` is handled by [`DataActions::parse`].
    pub fn parse(name: &str) -> Option<DataAction> {
        DataAction::ALL
            .into_iter()
            .chain([DataAction::Smart])
            .find(|action| action.name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u32 {
        self.bit_const()
    }

    const fn bit_const(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for DataAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SMART v2 actions each v1 data action covers ([`DataActions::implied`]).
const IMPLIED: [(DataAction, DataActions); 2] = [
    (
        DataAction::Read,
        DataActions(DataAction::ReadById.bit_const() | DataAction::Search.bit_const()),
    ),
    (
        DataAction::Write,
        DataActions(DataAction::Create.bit_const() | DataAction::Update.bit_const()),
    ),
];

/// A set of data actions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DataActions(u32);

impl DataActions {
    /// The empty set: grants nothing.
    pub const NONE: DataActions = DataActions(0);
    /// `*`: bits 0–15, without `Smart`.
    pub const ALL: DataActions = DataActions(0xFFFF);

    /// The set holding exactly `actions`.
    pub fn of(actions: &[DataAction]) -> DataActions {
        actions
            .iter()
            .fold(DataActions::NONE, |set, action| set.with(*action))
    }

    /// Parses one `allowedDataActions` / role value: a data action name or `*`.
    pub fn parse(name: &str) -> Option<DataActions> {
        if name == "*" {
            return Some(DataActions::ALL);
        }
        DataAction::parse(name).map(|action| DataActions::NONE.with(action))
    }

    /// This set plus `action`.
    #[must_use]
    pub fn with(self, action: DataAction) -> DataActions {
        DataActions(self.0 | action.bit())
    }

    /// This set less `action`.
    #[must_use]
    pub fn without(self, action: DataAction) -> DataActions {
        DataActions(self.0 & !action.bit())
    }

    /// The actions in either set (e.g. the grants of several roles).
    #[must_use]
    pub fn union(self, other: DataActions) -> DataActions {
        DataActions(self.0 | other.0)
    }

    /// The actions in both sets: how SMART scopes narrow a role's grant (reference §3.1).
    #[must_use]
    pub fn intersection(self, other: DataActions) -> DataActions {
        DataActions(self.0 & other.0)
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: DataAction) -> bool {
        self.0 & action.bit() != 0
    }

    /// Whether every action of `other` is in this set.
    pub fn contains_all(self, other: DataActions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set grants nothing.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// This grant with the SMART v2 actions it covers (SPEC §4.8, issue 10): a granted `Read`
    /// covers `ReadById` and `Search`, a granted `Write` covers `Create` and `Update`. The v2
    /// letters are finer parts of the v1 actions (SMART App Launch 2.x §scopes: `read` = `rs`,
    /// `write` = `cud`), so `granted ∩ scope actions` narrows a v1 grant by v2 scopes as it
    /// does by v1 scopes. `Delete` is a data action of its own and is never implied.
    #[must_use]
    pub fn implied(self) -> DataActions {
        let mut implied = self;
        for (grant, covered) in IMPLIED {
            if self.contains(grant) {
                implied = implied.union(covered);
            }
        }
        implied
    }

    /// What [`DataActions::implied`] adds to this grant, per granted action, for `explain`:
    /// `Read covers ReadById, Search`. Empty when it adds nothing.
    pub fn implied_description(self) -> String {
        let parts: Vec<String> = IMPLIED
            .iter()
            .filter(|(grant, covered)| self.contains(*grant) && !self.contains_all(*covered))
            .map(|(grant, covered)| format!("{grant} covers {covered}"))
            .collect();
        parts.join("; ")
    }

    /// The actions in the set, in bit order, `Smart` last.
    pub fn iter(self) -> impl Iterator<Item = DataAction> {
        DataAction::ALL
            .into_iter()
            .chain([DataAction::Smart])
            .filter(move |action| self.contains(*action))
    }
}

impl FromIterator<DataAction> for DataActions {
    fn from_iter<I: IntoIterator<Item = DataAction>>(iter: I) -> DataActions {
        iter.into_iter()
            .fold(DataActions::NONE, |set, action| set.with(action))
    }
}

impl fmt::Debug for DataActions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for DataActions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(DataAction::name).collect();
        f.write_str(&names.join(", "))
    }
}

/// What a request needs: any one alternative, each a set of actions that must all be granted.
/// `Read | ReadById` is `[{Read}, {ReadById}]`; `(Read&Write) | Update` is
/// `[{Read, Write}, {Update}]` (reference §3.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Requirement {
    /// The ways to satisfy the requirement; each set must be granted in full.
    pub alternatives: Vec<DataActions>,
}

impl Requirement {
    /// A requirement met by any one of the given single actions.
    pub fn any_of(actions: &[DataAction]) -> Requirement {
        Requirement {
            alternatives: actions.iter().map(|a| DataActions::of(&[*a])).collect(),
        }
    }

    /// A requirement met by any one of the given sets.
    pub fn alternatives(sets: &[DataActions]) -> Requirement {
        Requirement {
            alternatives: sets.to_vec(),
        }
    }

    /// Adds `action` to every alternative (e.g. HardDelete on top of a delete).
    #[must_use]
    pub fn and(self, action: DataAction) -> Requirement {
        Requirement {
            alternatives: self
                .alternatives
                .into_iter()
                .map(|set| set.with(action))
                .collect(),
        }
    }

    /// True when `granted` covers at least one alternative. An empty requirement is never met:
    /// fail closed.
    pub fn is_met_by(&self, granted: DataActions) -> bool {
        self.alternatives
            .iter()
            .any(|set| granted.contains_all(*set))
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .alternatives
            .iter()
            .map(|set| {
                let names: Vec<&str> = set.iter().map(DataAction::name).collect();
                names.join(" & ")
            })
            .collect();
        f.write_str(&parts.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_excludes_smart() {
        assert!(DataActions::ALL.contains(DataAction::Update));
        assert!(!DataActions::ALL.contains(DataAction::Smart));
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(
            DataAction::parse("hardDelete"),
            Some(DataAction::HardDelete)
        );
        assert_eq!(DataAction::parse("Read"), Some(DataAction::Read));
        assert_eq!(DataAction::parse("Reed"), None);
        assert_eq!(DataActions::parse("*"), Some(DataActions::ALL));
    }

    #[test]
    fn read_and_write_imply_their_v2_letters() {
        use DataAction::*;
        let cases = [
            (vec![Read], vec![Read, Search, ReadById]),
            (vec![Write], vec![Write, Create, Update]),
            (
                vec![Read, Write],
                vec![Read, Write, Search, ReadById, Create, Update],
            ),
            (vec![Delete], vec![Delete]),
            (vec![Export, Smart], vec![Export, Smart]),
            (vec![Search], vec![Search]),
            (vec![Create, Update], vec![Create, Update]),
        ];
        for (granted, expected) in cases {
            assert_eq!(
                DataActions::of(&granted).implied(),
                DataActions::of(&expected),
                "{granted:?}"
            );
        }
        assert_eq!(DataActions::ALL.implied(), DataActions::ALL);
        assert_eq!(
            DataActions::of(&[Read, Write]).implied_description(),
            "Read covers Search, ReadById; Write covers Create, Update"
        );
        assert_eq!(DataActions::of(&[Delete]).implied_description(), "");
        assert_eq!(DataActions::ALL.implied_description(), "");
    }

    #[test]
    fn requirement_alternatives() {
        let patch = Requirement::alternatives(&[
            DataActions::of(&[DataAction::Read, DataAction::Write]),
            DataActions::of(&[DataAction::Update]),
        ]);
        assert!(patch.is_met_by(DataActions::of(&[DataAction::Update])));
        assert!(patch.is_met_by(DataActions::of(&[DataAction::Read, DataAction::Write])));
        assert!(!patch.is_met_by(DataActions::of(&[DataAction::Read])));
        assert!(!Requirement::default().is_met_by(DataActions::ALL));
        assert_eq!(patch.to_string(), "Read & Write | Update");
    }
}
