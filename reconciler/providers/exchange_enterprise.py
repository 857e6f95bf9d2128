"""What Exchange's Configure-EnterprisePartnerApplication.ps1 creates, as data: the ONE place to correct it.

`Configure-EnterprisePartnerApplication.ps1 -AuthMetadataUrl <url> -ApplicationType Lync|SharePoint`
(shipped in Exchange's Scripts folder) makes three kinds of objects: a partner application, a linked
user account the application acts as, and management (RBAC) role assignments for that account.

*Unconfirmed*: none of the names or roles below is in Microsoft's public documentation.
- Partner application names `LyncEnterprise` / `SharePointEnterprise`: our modelling.
- Linked accounts `LyncEnterprise-ApplicationAccount` / `SharePointEnterprise-ApplicationAccount`:
  as seen in the field.
- Roles (Lync: `UserApplication`, `ArchiveApplication`; SharePoint: `UserApplication`): the exact
  list the script assigns is not documented.

If a real server shows other names or roles, change this table and nothing else: the provider
(`providers/exchange.py`) reads every name and role from here, and so do its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EnterpriseApplication:
    """The objects the script makes for one ApplicationType."""

    partner_name: str
    """Name of the partner application (New-PartnerApplication -Name)."""
    linked_account: str
    """Name of the linked user account (New-LinkedUser -Name; the app's -LinkedAccount)."""
    roles: tuple[str, ...]
    """Management roles assigned to the linked account (New-ManagementRoleAssignment -Role -User)."""


ENTERPRISE_APPLICATIONS: Mapping[str, EnterpriseApplication] = {
    "Lync": EnterpriseApplication(
        partner_name="LyncEnterprise",
        linked_account="LyncEnterprise-ApplicationAccount",
        roles=("UserApplication", "ArchiveApplication"),
    ),
    "SharePoint": EnterpriseApplication(
        partner_name="SharePointEnterprise",
        linked_account="SharePointEnterprise-ApplicationAccount",
        roles=("UserApplication",),
    ),
}
"""By ApplicationType (the identity of an EnterprisePartnerApplication resource)."""


def enterprise_application(application_type: str) -> tuple[str, EnterpriseApplication] | None:
    """The table entry for an ApplicationType, matched case-insensitively (as PowerShell does)."""
    for name, app in ENTERPRISE_APPLICATIONS.items():
        if name.casefold() == application_type.casefold():
            return name, app
    return None
