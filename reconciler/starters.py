"""`reconcile init`: a commented starter manifest for the estate an admin names.

Each starter is the shape Microsoft's own setup guides give that estate (the seeds the shipped manifests
follow), written for a real one: hosts in variables, the pwsh transport on the management host, and a comment
on every line an admin has to look at. Each one validates as written (a test checks it), touches nothing
until `plan` is run, and says how to adopt what already exists (`reconcile export`) instead.
"""

from __future__ import annotations

_HEAD = """\
# Written by `reconcile init --type {kind}`. For completion and checks as you type (editors with the YAML
# language server): `reconcile schema --out manifest.schema.json`, then make the first line of this file
#   # yaml-language-server: $schema=manifest.schema.json
#
# Next: set the variables to your hosts, then
#   reconcile validate {file}          # checks it; touches nothing
#   reconcile discover {file}          # the first connection: prints what is live
#   reconcile plan {file}              # what apply would change
# Already configured by hand? `reconcile export {file} --out adopted.yaml`
# writes the manifest that describes what is live (plan against it: no changes); start from that one instead.
#
"""

_SKYPE_TARGET = """\
  pool:                                   # any name: how plans and history call this target
    provider: skype
    connection:
      transport: pwsh                     # this management host's PowerShell, with the Skype module
      modules: [SkypeForBusiness]         # Lync Server 2013: [Lync]
      # From a Linux runner instead: transport: winrm, server: <the pool's FQDN>, path: OcsPowershell
"""

_EXCHANGE_TARGET = """\
  exchange:
    provider: exchange
    connection:
      transport: pwsh
      modules: [Microsoft.Exchange.Management.PowerShell.SnapIn]   # a snap-in: runs in powershell.exe
    handlers:
      iisreset:                           # after an applied partner-application change, once (seed 002)
        servers:                          # every Exchange server of the organization
          - ${exchangeServer}
"""

_STARTERS: dict[str, str] = {
    "on-premises": """\
# Skype for Business Server and Exchange Server trusting each other on premises (Microsoft's "Configuring an
# on-premises partner application" and Configure-EnterprisePartnerApplication.ps1 -ApplicationType Lync).

variables:
  exchangeHost: https://mail.contoso.com          # Exchange's autodiscover host, as the pool reaches it
  poolHost: https://pool01.contoso.com            # the pool's internal web services FQDN
  exchangeServer: ex01

targets:
{skype}
{exchange}
resources:
  - target: pool
    kind: OAuthConfiguration
    serviceName: 00000004-0000-0ff1-ce00-000000000000   # Skype's well-known service name

  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    metadataUrl: ${{exchangeHost}}/autodiscover/metadata/json/1
    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000   # expected; another one means replace
    applicationTrustLevel: Full

  - target: exchange
    kind: EnterprisePartnerApplication
    identity: Lync
    authMetadataUrl: ${{poolHost}}/metadata/json/1

  - target: exchange
    kind: AuthConfig
    serviceName: 00000002-0000-0ff1-ce00-000000000000

# verify:                                 # `reconcile verify` / `apply --verify`: both directions work
#   - target: pool
#     check: ExStorageConnectivity
#     sipUri: sip:someone@contoso.com
""",
    "sharepoint": """\
# SharePoint Server with Exchange and Skype for Business on premises: SharePoint trusts both as token issuers
# created from their metadata documents (New-SPTrustedSecurityTokenIssuer), Exchange trusts SharePoint
# (Configure-EnterprisePartnerApplication.ps1 -ApplicationType SharePoint), Skype trusts SharePoint.

variables:
  exchangeHost: https://mail.contoso.com
  sharepointHost: https://sharepoint.contoso.com
  poolHost: https://pool01.contoso.com
  exchangeServer: ex01

targets:
{skype}
{exchange}
  sharepoint:
    provider: sharepoint
    connection:
      transport: pwsh
      executable: powershell.exe          # SharePoint 2016/2019's snap-in loads in Windows PowerShell only
      modules: [Microsoft.SharePoint.PowerShell]

resources:
  - target: sharepoint
    kind: AuthenticationRealm
    realm: contoso.com                    # the farm's realm: the organization's

  - target: sharepoint
    kind: TrustedSecurityTokenIssuer
    identity: Exchange
    metadataEndPoint: ${{exchangeHost}}/autodiscover/metadata/json/1

  - target: sharepoint
    kind: TrustedSecurityTokenIssuer
    identity: Skype
    metadataEndPoint: ${{poolHost}}/metadata/json/1
    isTrustBroker: true

  - target: exchange
    kind: EnterprisePartnerApplication
    identity: SharePoint
    authMetadataUrl: ${{sharepointHost}}/_layouts/15/metadata/json/1

  - target: pool
    kind: PartnerApplication
    identity: microsoft.sharepoint
    metadataUrl: ${{sharepointHost}}/jsonmetadata.ashx
    applicationIdentifier: 00000003-0000-0ff1-ce00-000000000000
    applicationTrustLevel: Full
""",
    "cross-premises": """\
# Skype for Business Server with Office 365 (Microsoft's "Configuring Lync Server 2013 in a cross-premises
# environment", with Microsoft Graph in place of the retired MSOnline cmdlets): the pool trusts the tenant's
# authorization server, and the pool's OAuth certificate goes onto the tenant's Skype service principal.
# For Exchange hybrid, start from manifests/exchange-hybrid.yaml in the project (the dedicated hybrid app).

variables:
  tenantId: 00000000-0000-0000-0000-000000000000   # your directory (tenant) id
  poolWebFqdn: pool01.contoso.com                  # the pool's external web services FQDN

targets:
{skype}
  tenant:
    provider: office365
    connection:
      transport: graph
      tenantId: ${{tenantId}}
      clientId: 00000000-0000-0000-0000-000000000000   # the app registration reconcile signs in as
      clientSecretEnv: RECONCILE_GRAPH_CLIENT_SECRET   # its secret, from the environment (never here)

resources:
  - target: pool
    kind: OAuthServer
    identity: microsoft.sts
    metadataUrl: https://accounts.accesscontrol.windows.net/${{tenantId}}/metadata/json/1

  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000
    useOAuthServer: true
    applicationTrustLevel: Full

  - target: pool
    kind: OAuthConfiguration
    serviceName: 00000004-0000-0ff1-ce00-000000000000

  - target: tenant
    kind: ServicePrincipal
    identity: 00000004-0000-0ff1-ce00-000000000000   # Skype for Business Online
    servicePrincipalNames:
      - 00000004-0000-0ff1-ce00-000000000000/${{poolWebFqdn}}
    # credentials:                        # the pool's OAuth certificate (export it as a .cer beside this file)
    #   - certificateFile: certs/pool-oauth.cer
""",
}

KINDS = tuple(_STARTERS)


def starter(kind: str, file: str) -> str:
    """The starter manifest for `kind` (one of KINDS), its comments naming `file`."""
    body = _STARTERS[kind].format(skype=_SKYPE_TARGET, exchange=_EXCHANGE_TARGET)
    body = body.replace("\n\nvariables:", "\n\napiVersion: reconciler/v1\n\nvariables:", 1)
    return _HEAD.format(kind=kind, file=file) + body
