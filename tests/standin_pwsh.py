#!/usr/bin/env python3
"""A stand-in for `pwsh ... -File runner.ps1`, so the pwsh transport's protocol is tested without PowerShell.

It speaks exactly the runner's protocol (see reconciler/transports/runner.ps1): a ready line after
"importing" the modules named in RECONCILER_PWSH_MODULES, then one JSON response line per JSON
request line until standard input closes. Commands are checked against the request's allow-list as
the runner does, then answered by the lab emulator on a lab state file, with `select` applied the
way Select-Object does (asked-for properties, in that order, missing ones as null).

A command with a "pipe" ({"source": {...}, "parameter": name}) has its source checked against the allow-list
too; the lab emulator runs the source, refuses other than one object with the runner's words, and binds it.

Native commands ({"native": true, "executable": ..., "arguments": [...]}) are checked the same way
(name pattern, allow-list, every argument a string), recorded on the lab host as `nativeRuns`
(executable and arguments exactly as received), and answered like the runner does: one
{"Stream": ..., "Line": ...} object per line, a non-zero exit code as "<exe> : exited with code n: ...".
Known executables: `iisreset` (IIS's restart output), `echoargs` (one output line per argument, as
received); any other is "not recognized".

Environment:
  STANDIN_STATE            the lab state file; STANDIN_HOST: the lab host that plays this server
  STANDIN_RECORD           a file receiving, one per line: {"start": {...}} at start, every request
                           line exactly as it arrived (bytes), {"eof": true} when input closes
  STANDIN_MISSING_MODULES  comma-separated module names whose import fails
  STANDIN_MISBEHAVE        comma-separated modes, each `mode` (every request) or `mode@n` (request n):
    start:    banner (a non-JSON line before ready), slowstart (never gets ready)
    results:  unwrapped (a lone output object not in an array, no output as null),
              countwrapped (Windows PowerShell's {"value": [...], "Count": n}),
              dates (adds \\/Date(...)\\/ and /Date(...+0100)/ properties), enums (ApplicationTrustLevel
              as its number), nonobject (output items as strings)
    protocol: exit (dies mid-request after echoing the request to stderr), closestdout (closes its
              output and lingers), hang, garbage (a non-JSON line echoing the commands), wrongid,
              runnererror (a request-level {"id": n, "error": ...})
    natives:  nativefail (iisreset writes an error line and exits with code 1)
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from reconciler.commands import Pipe
from reconciler.lab.emulator import CmdletContext, find_host, run_command
from reconciler.lab.skype import TRUST_LEVELS
from reconciler.lab.state import LabStore
from reconciler.metadata import MetadataDocument, fetch_metadata
from reconciler.transports.base import Command

EXPECTED_ARGS = ["-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"]
NATIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
IISRESET_OUTPUT = ["", "Attempting stop...", "Internet services successfully stopped",
                   "Attempting start...", "Internet services successfully restarted"]
IISRESET_DENIED = ("Access denied, you must be an administrator of the remote computer to use this command. "
                   "Either have your account added to the administrator local group of the remote computer or "
                   "to the domain administrator global group.")
ESCAPED_DATE = "/Date(1700000000000)/"
OFFSET_DATE = "/Date(1700000000000+0100)/"


def record(entry: bytes | dict[str, Any]) -> None:
    path = os.environ.get("STANDIN_RECORD")
    if not path:
        return
    data = entry if isinstance(entry, bytes) else (json.dumps(entry) + "\n").encode()
    with open(path, "ab") as out:
        out.write(data if data.endswith(b"\n") else data + b"\n")


def modes_for(request_number: int) -> set[str]:
    active = set()
    for item in filter(None, (m.strip() for m in os.environ.get("STANDIN_MISBEHAVE", "").split(","))):
        mode, _, when = item.partition("@")
        if not when or int(when) == request_number:
            active.add(mode)
    return active


def write(line: str) -> None:
    sys.stdout.buffer.write(line.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def selected(obj: dict[str, Any], select: list[str]) -> dict[str, Any]:
    if not select:
        return obj
    by_name = {k.lower(): k for k in obj}
    return {by_name.get(name.lower(), name): obj.get(by_name.get(name.lower(), name)) for name in select}


def fetch(url: str) -> MetadataDocument:
    return fetch_metadata(url, None, 10.0)


def run_native(name: str, arguments: list[str], modes: set[str]) -> dict[str, Any]:
    """What the runner answers for `& $executable @arguments`, for the executables this stand-in knows."""
    lines: list[dict[str, str]]
    if name.lower() == "echoargs":
        lines, code = [{"Stream": "Output", "Line": argument} for argument in arguments], 0
    elif name.lower() == "iisreset":
        if "nativefail" in modes:
            lines, code = [{"Stream": "Error", "Line": IISRESET_DENIED}], 1
        else:
            lines, code = [{"Stream": "Output", "Line": line} for line in IISRESET_OUTPUT], 0
    else:
        return {"ok": False, "error": f"{name} : The term '{name}' is not recognized as a name of a cmdlet, "
                                      "function, script file, or executable program."}
    if code != 0:
        tail = [entry["Line"].strip() for entry in lines if entry["Stream"] == "Error" and entry["Line"].strip()]
        tail = tail or [entry["Line"].strip() for entry in lines if entry["Line"].strip()]
        suffix = (": " + " / ".join(tail[-3:])) if tail else ""
        return {"ok": False, "error": f"{name} : exited with code {code}{suffix}"}
    return {"ok": True, "output": lines}


def answer_native(item: dict[str, Any], allow: set[str], host: dict[str, Any], modes: set[str]) -> dict[str, Any]:
    name = str(item.get("executable", ""))
    if not NATIVE_NAME.match(name) or name.lower() not in allow:
        return {"ok": False, "error": f"{name} : refused by the runner: not on the allow-list"}
    arguments = item.get("arguments") or []
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        return {"ok": False, "error": f"{name} : refused by the runner: every argument must be a string"}
    host.setdefault("nativeRuns", []).append({"executable": name, "arguments": arguments})
    return run_native(name, arguments, modes)


def answer(request: dict[str, Any], modes: set[str]) -> dict[str, Any]:
    """What the runner answers, computed by the lab emulator."""
    allow = {str(a).lower() for a in request.get("allow") or []}
    stop = bool(request.get("stopOnError", True))
    results: list[dict[str, Any]] = []
    with LabStore(os.environ["STANDIN_STATE"]).edit() as state:
        host = find_host(state, os.environ["STANDIN_HOST"])
        if host is None:
            return {"id": request.get("id"), "error": "runner : no such lab host"}
        record_ = state["hosts"][host]
        record_["roundTrips"] = int(record_.get("roundTrips", 0)) + 1
        calls = record_.setdefault("calls", {})
        for item in request.get("commands") or []:
            name = str(item.get("cmdlet", ""))
            if item.get("native") is True:
                results.append(answer_native(item, allow, record_, modes))
            elif name.lower() not in allow:
                results.append({"ok": False, "error": f"{name} : refused by the runner: not on the allow-list"})
            elif item.get("pipe") is not None and str(item["pipe"]["source"].get("cmdlet", "")).lower() not in allow:
                source = item["pipe"]["source"].get("cmdlet", "")
                results.append({"ok": False, "error": f"{source} : refused by the runner: not on the allow-list"})
            else:
                pipe = None
                if item.get("pipe") is not None:  # the runner binds the source's one object (the lab does the same)
                    source = item["pipe"]["source"]
                    calls[source["cmdlet"]] = int(calls.get(source["cmdlet"], 0)) + 1
                    pipe = Pipe(Command(source["cmdlet"], source.get("parameters") or {}), item["pipe"]["parameter"])
                calls[name] = int(calls.get(name, 0)) + 1
                command = Command(name, item.get("parameters") or {}, pipe=pipe)
                result = run_command(state, host, command, CmdletContext(fetch=fetch))
                if result.ok:
                    select = list(item.get("select") or [])
                    results.append({"ok": True, "output": [selected(dict(o), select) for o in result.output]})
                else:
                    results.append({"ok": False, "error": result.error})
            if stop and not results[-1]["ok"]:
                break
    return {"id": request.get("id"), "results": results}


def misshape(response: dict[str, Any], modes: set[str]) -> None:
    for result in response.get("results", []):
        if not result["ok"]:
            continue
        output = result["output"]
        for obj in output:
            if "dates" in modes:
                obj["WhenCreated"] = ESCAPED_DATE
                obj["WhenChanged"] = OFFSET_DATE
            if "enums" in modes and obj.get("ApplicationTrustLevel") in TRUST_LEVELS:
                obj["ApplicationTrustLevel"] = TRUST_LEVELS.index(obj["ApplicationTrustLevel"])
        if "nonobject" in modes:
            result["output"] = ["Microsoft.Rtc.Management.WritableConfig.Policy.Oauth" for _ in output]
        elif "unwrapped" in modes and len(output) <= 1:
            result["output"] = output[0] if output else None
        elif "countwrapped" in modes:
            result["output"] = {"value": output, "Count": len(output)}


def serve() -> int:
    args = sys.argv[1:]
    if args[:-1] != EXPECTED_ARGS or not args[-1].endswith("runner.ps1") or not Path(args[-1]).is_file():
        sys.stderr.write(f"standin: not started as the pwsh transport starts the runner: {args}\n")
        return 64
    modules = json.loads(os.environ.get("RECONCILER_PWSH_MODULES") or "[]")
    record({"start": {"argv": args, "modules": modules, "pid": os.getpid()}})
    startup = modes_for(0)
    if "slowstart" in startup:
        time.sleep(3600)
    if "banner" in startup:
        write("PowerShell 7.4.0")
    missing = {m for m in os.environ.get("STANDIN_MISSING_MODULES", "").split(",") if m}
    for module in modules:
        if module in missing:
            write(json.dumps({"ready": False, "error": f"Import-Module : The specified module '{module}' was not "
                              "loaded because no valid module file was found in any module directory."}))
            return 1
    write(json.dumps({"ready": True, "version": "7.4.0-standin"}))

    number = 0
    while True:
        raw = sys.stdin.buffer.readline()
        if not raw:
            record({"eof": True})
            return 0
        if not raw.strip():
            continue
        number += 1
        record(raw)
        modes = modes_for(number)
        if "exit" in modes:
            sys.stderr.write("standin: something went badly wrong\n")
            sys.stderr.write("standin: while running " + raw.decode("utf-8").strip() + "\n")
            sys.stderr.flush()
            os._exit(3)
        if "closestdout" in modes:
            sys.stdout.flush()
            os.close(1)
            time.sleep(60)
            return 0
        if "hang" in modes:
            time.sleep(3600)
        request = json.loads(raw.decode("utf-8"))
        if "garbage" in modes:
            write("garbage: " + json.dumps(request.get("commands")))
            continue
        sys.stderr.write(f"WARNING: standin request {request.get('id')}\n")  # diagnostics go to stderr
        sys.stderr.flush()
        if "runnererror" in modes:
            write(json.dumps({"id": request.get("id"), "error": "runner : Conversion from JSON failed"}))
            continue
        response = answer(request, modes)
        if "wrongid" in modes:
            response["id"] = int(response["id"]) + 1000
        misshape(response, modes)
        text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        # Windows PowerShell writes dates as "\/Date(ms)\/": JSON's optional escape of "/".
        write(text.replace(f'"{ESCAPED_DATE}"', '"\\/Date(1700000000000)\\/"'))


if __name__ == "__main__":
    sys.exit(serve())
