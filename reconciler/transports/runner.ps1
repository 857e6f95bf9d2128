#Requires -Version 5.1
<#
.SYNOPSIS
    reconciler's PowerShell runner: commands arrive as JSON lines on standard input, results leave
    as JSON lines on standard output.

.DESCRIPTION
    Started once per target per run by reconciler.transports.pwsh (`transport: pwsh`), so the
    Skype for Business / Exchange modules are imported once, not once per batch.

    Protocol (one JSON document per line, UTF-8):
      start:    {"ready": true, "version": "<PSVersion>"}  after importing the modules named in the
                RECONCILER_PWSH_MODULES environment variable (a JSON array), or
                {"ready": false, "error": "..."} and exit code 1 when one cannot be imported.
      request:  {"id": n, "allow": ["Get-CsOAuthServer", "iisreset", ...], "stopOnError": true,
                 "commands": [{"cmdlet": "...", "parameters": {...}, "select": ["Prop", ...]},
                              {"cmdlet": "...", "parameters": {...}, "select": [],
                               "pipe": {"source": {"cmdlet": "...", "parameters": {...}}, "parameter": "..."}},
                              {"native": true, "executable": "iisreset", "arguments": ["...", ...]}]}
      response: {"id": n, "results": [{"ok": true, "output": [{...}, ...]},
                                      {"ok": false, "error": "<cmdlet> : <message>"}]}
                or {"id": n, "error": "..."} when the request itself could not be read.
      A native command's output is one {"Stream": "Output"|"Error", "Line": "..."} object per line
      it wrote (standard output or standard error, in order); a non-zero exit code fails it with
      "<executable> : exited with code <n>: <its last lines>".
      A command with a "pipe" first runs the pipe's source cmdlet (same allow-list, parameters splatted the same
      way) and binds its one output object to the named parameter; a failing source fails the command, and a
      source that writes other than one object fails it unrun with "<cmdlet> : not run: <source> wrote <n>
      objects for -<parameter>, exactly one is needed".
      The runner exits when standard input closes.

    Why it is safe to feed it manifest values: a command is a cmdlet name (checked against the
    request's allow-list, then looked up with Get-Command as a cmdlet or function) and a hashtable
    of parameters that is SPLATTED onto it. Values are bound by PowerShell's parameter binder and
    never parsed as PowerShell: this script builds no code from text anywhere. A native command is
    an executable name (checked against the same allow-list and a strict name pattern, then looked
    up with Get-Command as an application, so never a function, alias or script) and an array of
    strings that is ARRAY-SPLATTED onto it: each string is one argument, passed as it is.

    Only protocol lines go to standard output. Each cmdlet's other streams (warnings, verbose,
    information, Write-Host) are captured and written to standard error, and .NET's Console.Out is
    pointed at standard error too, for code that writes to the console directly.

    Output objects become plain ordered dictionaries of their properties (those in `select` when
    given): enums as their names, dates as ISO 8601, byte arrays as base64, objects that print as
    text (identities, GUIDs, URIs) as that text, other nested objects and collections as nested
    dictionaries and arrays down to depth 3, below which values are text. That keeps the JSON the
    same on Windows PowerShell 5.1 and PowerShell 7.
#>
[CmdletBinding()]
param()

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$ConfirmPreference = 'None'            # no prompt can ever be answered here

# Windows PowerShell 5.1 serializes arrays that carry extended type data as {"value": [...], "Count": n};
# without this type data they serialize as plain arrays. (PowerShell 7 has none to remove.)
Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue

$utf8 = New-Object System.Text.UTF8Encoding -ArgumentList $false
$protocolIn = New-Object System.IO.StreamReader -ArgumentList ([Console]::OpenStandardInput()), $utf8
$protocolOut = New-Object System.IO.StreamWriter -ArgumentList ([Console]::OpenStandardOutput()), $utf8
$protocolOut.AutoFlush = $true
$protocolOut.NewLine = "`n"
$diagnostics = [Console]::Error
[Console]::SetOut($diagnostics)

# PowerShell 7.5+ can leave date-like strings alone when reading JSON; earlier 7.x turn ISO 8601
# strings into DateTime (Windows PowerShell 5.1 does not). Use the option where it exists.
$readOptions = @{}
if ((Get-Command -Name ConvertFrom-Json).Parameters.ContainsKey('DateKind')) {
    $readOptions['DateKind'] = 'String'
}

function Write-ProtocolLine {
    param($Value)
    $line = ConvertTo-Json -InputObject $Value -Compress -Depth 6
    $protocolOut.WriteLine($line)
}

function Write-Diagnostic {
    param([string]$Text)
    $diagnostics.WriteLine($Text)
}

function Get-Field {
    <# A property of a parsed JSON object, or $Default when absent (strict mode forbids plain access).
       An array value comes back whole (the leading comma stops PowerShell unrolling it), so callers
       assign the result and loop over the variable rather than wrapping the call in @(). #>
    param($Object, [string]$Name, $Default = $null)
    if ($null -eq $Object) { return $Default }
    $property = $Object.PSObject.Properties[$Name]
    if ($null -eq $property) { return $Default }
    return , $property.Value
}

function ConvertFrom-JsonValue {
    <# A parsed JSON value as a parameter value: objects become hashtables, arrays stay arrays. #>
    param($Value)
    if ($null -eq $Value) { return $null }
    if ($Value.GetType().FullName -eq 'System.Management.Automation.PSCustomObject') {
        $table = @{}
        foreach ($property in $Value.PSObject.Properties) {
            $table[$property.Name] = ConvertFrom-JsonValue -Value $property.Value
        }
        return $table
    }
    if ($Value -is [System.Array]) {
        $items = New-Object System.Collections.Generic.List[object]
        foreach ($item in $Value) { $items.Add((ConvertFrom-JsonValue -Value $item)) }
        return , $items.ToArray()
    }
    return $Value    # string, bool, number: exactly as sent
}

function Test-Scalar {
    param($Value)
    if ($null -eq $Value) { return $true }
    if ($Value -is [string] -or $Value -is [char] -or $Value -is [bool] -or $Value -is [enum]) { return $true }
    if ($Value -is [datetime] -or $Value -is [datetimeoffset] -or $Value -is [decimal]) { return $true }
    return $Value.GetType().IsPrimitive
}

function ConvertTo-Scalar {
    param($Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [enum]) { return $Value.ToString() }
    if ($Value -is [datetime] -or $Value -is [datetimeoffset]) {
        return $Value.ToString('o', [System.Globalization.CultureInfo]::InvariantCulture)
    }
    if ($Value -is [char]) { return [string]$Value }
    if ($Value -is [string] -or $Value -is [bool] -or $Value -is [decimal]) { return $Value }
    if ($Value -is [double] -or $Value -is [single]) {
        if ([double]::IsNaN($Value) -or [double]::IsInfinity($Value)) { return [string]$Value }
        return $Value
    }
    if ($Value.GetType().IsPrimitive) { return $Value }
    return [string]$Value
}

function Test-PropertyBag {
    <# True for objects best shown as their properties: those that do not print as meaningful text. #>
    param($Value)
    if ($Value.GetType().FullName -eq 'System.Management.Automation.PSCustomObject') { return $true }
    $text = $null
    try { $text = $Value.ToString() } catch { return $true }
    return ([string]::IsNullOrEmpty($text) -or $text -eq $Value.GetType().FullName)
}

function ConvertTo-PlainValue {
    <# A property value at nesting level $Level (an output object's properties are level 2). #>
    param($Value, [int]$Level)
    if (Test-Scalar -Value $Value) { return (ConvertTo-Scalar -Value $Value) }
    if ($Value -is [byte[]]) { return [System.Convert]::ToBase64String($Value) }
    if ($Level -gt 3) { return [string]$Value }
    if ($Value -is [System.Collections.IDictionary]) {
        $plain = [ordered]@{}
        foreach ($key in $Value.Keys) {
            $plain[[string]$key] = ConvertTo-PlainValue -Value $Value[$key] -Level ($Level + 1)
        }
        return $plain
    }
    if ($Value -is [System.Collections.IEnumerable]) {
        $items = New-Object System.Collections.Generic.List[object]
        foreach ($item in $Value) { $items.Add((ConvertTo-PlainValue -Value $item -Level ($Level + 1))) }
        return , $items.ToArray()
    }
    if (-not (Test-PropertyBag -Value $Value)) { return $Value.ToString() }
    $plain = [ordered]@{}
    foreach ($property in $Value.PSObject.Properties) {
        $plain[$property.Name] = Get-PropertyValue -Property $property -Level ($Level + 1)
    }
    return $plain
}

function Get-PropertyValue {
    param($Property, [int]$Level)
    if (-not $Property.IsGettable) { return $null }
    try { $raw = $Property.Value } catch { return $null }    # some getters throw; the property reads as null
    return , (ConvertTo-PlainValue -Value $raw -Level $Level)
}

function ConvertTo-PlainObject {
    <# One output object as an ordered dictionary of its properties (a bare value stays as it is). #>
    param($Object)
    if (Test-Scalar -Value $Object) { return (ConvertTo-Scalar -Value $Object) }
    if ($Object -is [System.Collections.IDictionary]) { return (ConvertTo-PlainValue -Value $Object -Level 1) }
    $plain = [ordered]@{}
    foreach ($property in $Object.PSObject.Properties) {
        $plain[$property.Name] = Get-PropertyValue -Property $property -Level 2
    }
    return $plain
}

function Format-Failure {
    param([string]$Cmdlet, $Failure)
    $message = $null
    if ($Failure -is [System.Management.Automation.ErrorRecord]) {
        $message = $Failure.Exception.Message
        if ($Failure.Exception -is [System.Management.Automation.ActionPreferenceStopException] -and
            $null -ne $Failure.Exception.ErrorRecord) {
            $message = $Failure.Exception.ErrorRecord.Exception.Message
        }
    }
    if ([string]::IsNullOrEmpty($message)) { $message = [string]$Failure }
    return ('{0} : {1}' -f $Cmdlet, $message)
}

$nativeNamePattern = '^[A-Za-z][A-Za-z0-9._-]*$'
$nativeTailLines = 3

function Format-NativeFailure {
    <# "<executable> : exited with code <n>", then its last few lines (standard error first). #>
    param([string]$Name, $ExitCode, $Lines)
    $tail = New-Object System.Collections.Generic.List[string]
    foreach ($stream in @('Error', 'Output')) {
        foreach ($line in $Lines) {
            if ($line.Stream -eq $stream -and -not [string]::IsNullOrWhiteSpace($line.Line)) {
                $tail.Add($line.Line.Trim())
            }
        }
        if ($tail.Count -gt 0) { break }
    }
    $message = '{0} : exited with code {1}' -f $Name, $ExitCode
    if ($tail.Count -gt 0) {
        $first = [Math]::Max(0, $tail.Count - $nativeTailLines)
        $message = '{0}: {1}' -f $message, ($tail.GetRange($first, $tail.Count - $first).ToArray() -join ' / ')
    }
    return $message
}

function Invoke-NativeCommand {
    <# An executable (e.g. iisreset) with positional arguments. The arguments are ARRAY-SPLATTED:
       each string is one argument, passed as it is, never parsed as PowerShell. Its output lines
       come back in order; a non-zero $LASTEXITCODE is a failure. #>
    param($Command, [string[]]$Allow)
    $name = [string](Get-Field -Object $Command -Name 'executable' -Default '')
    if (-not ($name -cmatch $nativeNamePattern) -or -not ($Allow -contains $name)) {
        return [ordered]@{ ok = $false; error = ('{0} : refused by the runner: not on the allow-list' -f $name) }
    }
    $arguments = New-Object System.Collections.Generic.List[string]
    $given = Get-Field -Object $Command -Name 'arguments'
    foreach ($argument in $given) {
        if ($argument -isnot [string]) {
            return [ordered]@{ ok = $false; error = ('{0} : refused by the runner: every argument must be a string' -f $name) }
        }
        $arguments.Add($argument)
    }
    $arguments = $arguments.ToArray()

    $captured = $null
    $exitCode = $null
    try {
        # An application found on PATH: never a function, alias or script of that name.
        $executable = Get-Command -Name $name -CommandType Application -ErrorAction Stop | Select-Object -First 1
        # Standard error lines are records to report, not terminating errors (Windows PowerShell 5.1
        # stops at the first one under 'Stop'; PowerShell 7.3+ can fail on the exit code itself).
        $ErrorActionPreference = 'Continue'
        $PSNativeCommandUseErrorActionPreference = $false
        # Empty input: the executable gets a closed standard input, never this runner's protocol
        # stream. Capturing the output keeps it off standard output.
        $captured = @() | & $executable @arguments 2>&1
        $exitCode = $LASTEXITCODE
    } catch {
        return [ordered]@{ ok = $false; error = (Format-Failure -Cmdlet $name -Failure $_) }
    }

    $lines = New-Object System.Collections.Generic.List[object]
    foreach ($record in @($captured)) {
        if ($null -eq $record) { continue }
        if ($record -is [System.Management.Automation.ErrorRecord]) {
            $text = [string]$record.Exception.Message
            Write-Diagnostic -Text ('{0}: {1}' -f $name, $text)
            $lines.Add([ordered]@{ Stream = 'Error'; Line = $text })
        } else {
            $lines.Add([ordered]@{ Stream = 'Output'; Line = [string]$record })
        }
    }
    if ($null -eq $exitCode) {
        return [ordered]@{ ok = $false; error = ('{0} : ran, but left no exit code' -f $name) }
    }
    if ($exitCode -ne 0) {
        return [ordered]@{ ok = $false; error = (Format-NativeFailure -Name $name -ExitCode $exitCode -Lines $lines) }
    }
    return [ordered]@{ ok = $true; output = $lines.ToArray() }
}

function ConvertTo-Parameters {
    <# A request's parameter object as a hashtable to splat (names as sent, values as parsed JSON). #>
    param($Given)
    $params = @{}
    if ($null -ne $Given) {
        foreach ($property in $Given.PSObject.Properties) {
            $params[$property.Name] = ConvertFrom-JsonValue -Value $property.Value
        }
    }
    return $params
}

function Invoke-CmdletObjects {
    <# One cmdlet with its parameters SPLATTED; its output objects as they are (not yet made plain), or its
       failure. Other streams go to standard error. #>
    param([string]$Name, [hashtable]$params)
    $captured = $null
    try {
        $target = Get-Command -Name $Name -CommandType @('Cmdlet', 'Function') -ErrorAction Stop |
            Select-Object -First 1
        $captured = & $target @params -ErrorAction Stop *>&1
    } catch {
        return [ordered]@{ ok = $false; error = (Format-Failure -Cmdlet $Name -Failure $_) }
    }

    $objects = New-Object System.Collections.Generic.List[object]
    foreach ($record in @($captured)) {
        if ($null -eq $record) { continue }
        if ($record -is [System.Management.Automation.ErrorRecord]) {
            # An error that did not stop the cmdlet still means it did not do what was asked.
            return [ordered]@{ ok = $false; error = (Format-Failure -Cmdlet $Name -Failure $record) }
        }
        if ($record -is [System.Management.Automation.InformationalRecord]) {
            # Warning, verbose and debug records.
            Write-Diagnostic -Text ('{0}: {1}' -f $Name, $record.Message)
            continue
        }
        if ($record -is [System.Management.Automation.InformationRecord]) {
            Write-Diagnostic -Text ('{0}: {1}' -f $Name, $record.MessageData)
            continue
        }
        $objects.Add($record)
    }
    return [ordered]@{ ok = $true; objects = $objects.ToArray() }
}

$parameterNamePattern = '^[A-Za-z_][A-Za-z0-9_]*$'

function Invoke-OneCommand {
    param($Command, [string[]]$Allow)
    if ([bool](Get-Field -Object $Command -Name 'native' -Default $false)) {
        return (Invoke-NativeCommand -Command $Command -Allow $Allow)
    }
    $name = [string](Get-Field -Object $Command -Name 'cmdlet' -Default '')
    if (-not ($Allow -contains $name)) {
        return [ordered]@{ ok = $false; error = ('{0} : refused by the runner: not on the allow-list' -f $name) }
    }

    $params = ConvertTo-Parameters -Given (Get-Field -Object $Command -Name 'parameters')
    $select = New-Object System.Collections.Generic.List[string]
    $wanted = Get-Field -Object $Command -Name 'select'
    foreach ($property in $wanted) {
        if ($null -ne $property) { $select.Add([string]$property) }
    }

    # A pipe: the one object its source cmdlet writes is bound to the named parameter (an object such as an
    # SPAppPrincipal, which no JSON value can stand for). The source is a cmdlet of the same allow-list, its
    # parameters splatted the same way; other than exactly one object and the command is not run.
    $pipe = Get-Field -Object $Command -Name 'pipe'
    if ($null -ne $pipe) {
        $source = Get-Field -Object $pipe -Name 'source'
        $sourceName = [string](Get-Field -Object $source -Name 'cmdlet' -Default '')
        $parameter = [string](Get-Field -Object $pipe -Name 'parameter' -Default '')
        if (-not ($parameter -cmatch $parameterNamePattern) -or $params.ContainsKey($parameter)) {
            return [ordered]@{ ok = $false; error = ('{0} : refused by the runner: the pipe names no free parameter' -f $name) }
        }
        if ([bool](Get-Field -Object $source -Name 'native' -Default $false) -or
            $null -ne (Get-Field -Object $source -Name 'pipe') -or -not ($Allow -contains $sourceName)) {
            return [ordered]@{ ok = $false; error = ('{0} : refused by the runner: not on the allow-list' -f $sourceName) }
        }
        $sourceParams = ConvertTo-Parameters -Given (Get-Field -Object $source -Name 'parameters')
        $sourceRun = Invoke-CmdletObjects -Name $sourceName -Params $sourceParams
        if (-not $sourceRun.ok) {
            return [ordered]@{ ok = $false; error = $sourceRun.error }
        }
        $piped = @($sourceRun.objects)
        if ($piped.Length -ne 1) {
            return [ordered]@{ ok = $false; error = ('{0} : not run: {1} wrote {2} objects for -{3}, exactly one is needed' -f
                                                     $name, $sourceName, $piped.Length, $parameter) }
        }
        $params[$parameter] = $piped[0]
    }

    $run = Invoke-CmdletObjects -Name $name -Params $params
    if (-not $run.ok) { return $run }

    $selected = @($run.objects)
    if ($select.Count -gt 0 -and $selected.Length -gt 0) {
        $selected = @($selected | Select-Object -Property $select.ToArray())
    }
    $output = New-Object System.Collections.Generic.List[object]
    foreach ($item in $selected) { $output.Add((ConvertTo-PlainObject -Object $item)) }
    return [ordered]@{ ok = $true; output = $output.ToArray() }
}

function Invoke-Request {
    param($Request)
    $allow = New-Object System.Collections.Generic.List[string]
    $allowed = Get-Field -Object $Request -Name 'allow'
    foreach ($name in $allowed) {
        if ($null -ne $name) { $allow.Add([string]$name) }
    }
    $stopOnError = [bool](Get-Field -Object $Request -Name 'stopOnError' -Default $true)
    $results = New-Object System.Collections.Generic.List[object]
    $commands = Get-Field -Object $Request -Name 'commands'
    foreach ($command in $commands) {
        if ($null -eq $command) { continue }
        $result = Invoke-OneCommand -Command $command -Allow $allow.ToArray()
        $results.Add($result)
        if ($stopOnError -and -not $result.ok) { break }
    }
    return [ordered]@{ id = (Get-Field -Object $Request -Name 'id'); results = $results.ToArray() }
}

# --- start: import the modules, say ready -----------------------------------------------------------

$modules = @()
if (-not [string]::IsNullOrEmpty($env:RECONCILER_PWSH_MODULES)) {
    $modules = @(ConvertFrom-Json -InputObject $env:RECONCILER_PWSH_MODULES | ForEach-Object { $_ })
}
$snapinsExist = $null -ne (Get-Command -Name Get-PSSnapin -ErrorAction SilentlyContinue)
foreach ($module in $modules) {
    try {
        $registered = $null
        if ($snapinsExist) {
            $registered = Get-PSSnapin -Registered -Name $module -ErrorAction SilentlyContinue
        }
        if ($null -ne $registered) {
            $records = Add-PSSnapin -Name $module -ErrorAction Stop *>&1
        } else {
            $records = Import-Module -Name $module -DisableNameChecking -ErrorAction Stop *>&1
        }
        foreach ($record in @($records)) { if ($null -ne $record) { Write-Diagnostic -Text ([string]$record) } }
    } catch {
        Write-ProtocolLine -Value ([ordered]@{ ready = $false; error = (Format-Failure -Cmdlet 'Import-Module' -Failure $_) })
        exit 1
    }
}
Write-ProtocolLine -Value ([ordered]@{ ready = $true; version = $PSVersionTable.PSVersion.ToString() })

# --- serve: one request per line until standard input closes ---------------------------------------

while ($true) {
    $line = $protocolIn.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Trim().Length -eq 0) { continue }
    $id = $null
    try {
        $request = ConvertFrom-Json -InputObject $line @readOptions
        $id = Get-Field -Object $request -Name 'id'
        $response = Invoke-Request -Request $request
    } catch {
        $response = [ordered]@{ id = $id; error = (Format-Failure -Cmdlet 'runner' -Failure $_) }
    }
    Write-ProtocolLine -Value $response
}
exit 0
