//! Built-in roles and the permissions each one grants. Authorisation checks ask for a
//! [`Permission`], never for a role, so a role's powers are defined in exactly one place.

use serde::{Deserialize, Serialize};

/// A built-in role. A user has one or more.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the organisation: users, roles, policies.
    OrgAdmin,
    /// A physician or other licensed clinician.
    Clinician,
    /// A nurse.
    Nurse,
    /// Front-desk and scheduling staff.
    FrontDesk,
    /// Reads the audit trail; changes nothing.
    ComplianceOfficer,
}

/// Something a user may do. Checked by the application layer before every use case.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// See the organisation's user directory (names and roles).
    DirectoryRead,
    /// Create, deactivate and change users, their roles and their MFA.
    UsersManage,
    /// Change organisation policies (session timeouts, MFA requirement, limits).
    PolicyManage,
    /// See the roles and the permissions each grants.
    RolesRead,
    /// Take part in care-team messaging.
    MessagingUse,
    /// Read patient information in conversations the user belongs to.
    PatientRead,
    /// Register patients and look them up by MRN.
    PatientRegister,
    /// Message patients (texts and secure links).
    PatientMessaging,
    /// Search and export the audit trail.
    AuditRead,
}

impl Role {
    /// Every built-in role, in display order.
    pub const ALL: [Role; 5] =
        [Role::OrgAdmin, Role::Clinician, Role::Nurse, Role::FrontDesk, Role::ComplianceOfficer];

    /// The stable name used in the API, the CLI and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org_admin",
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::FrontDesk => "front_desk",
            Role::ComplianceOfficer => "compliance_officer",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A short human description.
    pub fn description(self) -> &'static str {
        match self {
            Role::OrgAdmin => "Organisation administrator: users, roles and policies",
            Role::Clinician => "Clinician: care-team messaging and patient information",
            Role::Nurse => "Nurse: care-team messaging and patient information",
            Role::FrontDesk => "Front desk: patient texting and scheduling messages",
            Role::ComplianceOfficer => "Compliance officer: read-only access to the audit trail",
        }
    }

    /// The permissions this role grants.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::OrgAdmin => &[DirectoryRead, UsersManage, PolicyManage, RolesRead, AuditRead],
            Role::Clinician => &[DirectoryRead, MessagingUse, PatientRead, PatientRegister, PatientMessaging],
            Role::Nurse => &[DirectoryRead, MessagingUse, PatientRead, PatientRegister, PatientMessaging],
            Role::FrontDesk => &[DirectoryRead, MessagingUse, PatientRegister, PatientMessaging],
            Role::ComplianceOfficer => &[DirectoryRead, AuditRead, RolesRead],
        }
    }
}

/// A non-empty, de-duplicated, sorted set of roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoleSet(Vec<Role>);

impl RoleSet {
    /// Builds a role set; refuses an empty one.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Result<Self, crate::ValidationError> {
        let mut v: Vec<Role> = roles.into_iter().collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Err(crate::ValidationError::new(
                "roles",
                "roles_empty",
                "a user needs at least one role",
            ));
        }
        Ok(Self(v))
    }

    /// The roles, sorted.
    pub fn roles(&self) -> &[Role] {
        &self.0
    }

    /// Whether any role grants `p`.
    pub fn allows(&self, p: Permission) -> bool {
        self.0.iter().any(|r| r.permissions().contains(&p))
    }

    /// Every permission the roles grant, sorted, each once.
    pub fn permissions(&self) -> Vec<Permission> {
        let mut all: Vec<Permission> = self.0.iter().flat_map(|r| r.permissions().iter().copied()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Whether the set contains `role`.
    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// The role recorded in audit entries: the most privileged one held.
    pub fn primary(&self) -> Role {
        self.0[0]
    }

    /// Comma-separated stable names, for storage.
    pub fn to_storage(&self) -> String {
        self.0.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Parses the storage form; unknown names are an error (storage is never trusted blindly).
    pub fn from_storage(s: &str) -> Option<Self> {
        let roles: Option<Vec<Role>> = s.split(',').map(Role::parse).collect();
        Self::new(roles?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_officer_reads_audit_but_manages_nothing() {
        let set = RoleSet::new([Role::ComplianceOfficer]).unwrap();
        assert!(set.allows(Permission::AuditRead));
        assert!(!set.allows(Permission::UsersManage));
        assert!(!set.allows(Permission::MessagingUse));
        assert!(!set.allows(Permission::PatientRead));
    }

    #[test]
    fn front_desk_cannot_read_patient_information_in_messaging() {
        let set = RoleSet::new([Role::FrontDesk]).unwrap();
        assert!(!set.allows(Permission::PatientRead));
        assert!(!set.allows(Permission::AuditRead));
    }

    #[test]
    fn permissions_of_several_roles_are_their_union_once_each() {
        let set = RoleSet::new([Role::Nurse, Role::OrgAdmin]).unwrap();
        let perms = set.permissions();
        assert!(perms.contains(&Permission::UsersManage) && perms.contains(&Permission::PatientRead));
        assert_eq!(perms.iter().filter(|p| **p == Permission::DirectoryRead).count(), 1);
        assert!(perms.contains(&Permission::AuditRead), "from org_admin");
        assert!(
            !RoleSet::new([Role::ComplianceOfficer])
                .unwrap()
                .permissions()
                .contains(&Permission::MessagingUse)
        );
    }

    #[test]
    fn empty_role_set_is_refused_and_duplicates_collapse() {
        assert!(RoleSet::new([]).is_err());
        let set = RoleSet::new([Role::Nurse, Role::Nurse, Role::OrgAdmin]).unwrap();
        assert_eq!(set.roles(), &[Role::OrgAdmin, Role::Nurse]);
        assert_eq!(RoleSet::from_storage(&set.to_storage()), Some(set));
        assert_eq!(RoleSet::from_storage("org_admin,superuser"), None);
    }
}
