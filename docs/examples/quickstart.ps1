# Quick start on a Windows management host (Windows PowerShell 5.1 or PowerShell 7, elevated).
#
# Installs reconcile into its own virtual environment under C:\ProgramData\reconcile, checks a manifest,
# shows the plan, and registers the scheduled task in reconcile-task.xml. It changes nothing on any server:
# `apply` is left for you to run once you have read the plan.
#
# Needs Python 3.11 or later (the `py` launcher from python.org, or winget install Python.Python.3.11).
# The pwsh transport starts Windows PowerShell 5.1 by itself when a target's modules name a snap-in
# (Microsoft.Exchange.Management.PowerShell.SnapIn); Skype for Business's module loads in either.
#
# Credential files (winrm credentialFile, Graph certificate keys) must be readable by their owner, SYSTEM
# and Administrators only; reconcile names anyone else who can read them. To fix one:
#   icacls C:\ProgramData\reconcile\secrets\winrm.json /inheritance:r /grant:r "CONTOSO\svc-reconcile:F" "SYSTEM:F" "Administrators:F"

$ErrorActionPreference = 'Stop'
$Root = 'C:\ProgramData\reconcile'
$Manifest = "$Root\manifests\estate.yaml"

New-Item -ItemType Directory -Force -Path $Root, "$Root\manifests", "$Root\state", "$Root\metrics" | Out-Null
py -3 -m venv "$Root\venv"
& "$Root\venv\Scripts\python.exe" -m pip install --upgrade pip
& "$Root\venv\Scripts\python.exe" -m pip install s2s-trust-reconciler
$reconcile = "$Root\venv\Scripts\reconcile.exe"

& $reconcile --version

# Put your manifest in $Manifest first (see the README, "The manifest"), then:
& $reconcile validate $Manifest
& $reconcile discover --state-dir "$Root\state" $Manifest
& $reconcile plan --state-dir "$Root\state" --store "sqlite:///C:/ProgramData/reconcile/state/runs.sqlite3" $Manifest

# When the plan is what you want (it asks for `yes`):
#   & $reconcile apply --state-dir "$Root\state" $Manifest

# Every 15 minutes from now on, as the service account (prompts for its password):
schtasks /create /xml "$PSScriptRoot\reconcile-task.xml" /tn reconcile /ru CONTOSO\svc-reconcile /rp *
# Run it once now and look at the result (0 converged, 2 drift left in warn mode, 1 error):
schtasks /run /tn reconcile
Get-ScheduledTaskInfo -TaskName reconcile | Select-Object LastRunTime, LastTaskResult
