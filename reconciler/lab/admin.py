"""Operations on the lab from outside the tool: create it, inspect it, and break it on purpose.

Tests and the demo use these to set up a situation (drift made behind the tool's back, a metadata
URL that stops answering, a cmdlet that fails once) and then check what the tool does about it.
The CLI (`reconcile lab ...`, reconciler.lab.cli) is a thin layer over these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from reconciler.errors import ReconcilerError
from reconciler.lab import certs
from reconciler.lab.emulator import Platform, find, find_host, platform
from reconciler.lab.estate import STYLES, default_estate
from reconciler.lab.server import find_document
from reconciler.lab.state import LabStore

STATUSES = ("ok", "invalid", "notfound", "unreachable")
StatePath = str | Path


class LabAdminError(ReconcilerError):
    """A lab operation that cannot be done as asked (unknown host, bad seed file, ...)."""


# --- init / show --------------------------------------------------------------------------------


def init_lab(state_path: StatePath, *, force: bool = False, estate: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create the state file with the default estate (or `estate`); refuses to overwrite unless `force`."""
    state = copy.deepcopy(dict(estate)) if estate is not None else default_estate()
    LabStore(state_path).create(state, force=force)
    return state


def _thumbprint(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return certs.thumbprint(certs.to_der(certs.from_b64(value)))
    except ValueError:
        return "(not a certificate)"


def _show_object(plat: Platform, obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object for people: certificates become `CertificateThumbprint`, never base64."""
    shown: dict[str, Any] = {}
    for name, value in obj.items():
        if name in plat.certificate_fields:
            shown[name.replace("RawData", "Thumbprint")] = _thumbprint(value)
        else:
            shown[name] = value
    return shown


def _host_name(state: Mapping[str, Any], host: str) -> str:
    found = find_host(state, host)
    if found is None:
        known = ", ".join(sorted(state.get("hosts", {}))) or "none"
        raise LabAdminError(f"the lab has no host {host!r} (hosts: {known})")
    return found


def show_lab(state_path: StatePath, host: str | None = None) -> dict[str, Any]:
    """Live objects per host (and, for the whole lab, services, documents and pending failures)."""
    state = LabStore(state_path).read()
    names = [_host_name(state, host)] if host else sorted(state.get("hosts", {}))
    hosts: dict[str, Any] = {}
    for name in names:
        record = state["hosts"][name]
        plat = platform(str(record.get("platform", "skype")))
        objects: dict[str, Any] = {}
        for kind, value in record.get("objects", {}).items():
            if isinstance(value, list):
                objects[kind] = [_show_object(plat, item) for item in value]
            else:
                objects[kind] = _show_object(plat, value)
        hosts[name] = {"platform": plat.name, "roundTrips": record.get("roundTrips", 0), "objects": objects}
    view: dict[str, Any] = {"hosts": hosts}
    if host is None:
        view["services"] = {
            name: {
                "serviceName": svc.get("serviceName"),
                "realm": svc.get("realm"),
                "style": svc.get("style"),
                "certificateThumbprint": _thumbprint(svc.get("certificate")),
            }
            for name, svc in state.get("services", {}).items()
        }
        view["documents"] = copy.deepcopy(state.get("documents", {}))
        view["failures"] = copy.deepcopy(state.get("failures", []))
    return view


def format_view(view: Mapping[str, Any]) -> str:
    """A readable rendering of show/stats output (YAML: what the manifests are written in)."""
    return yaml.safe_dump(dict(view), sort_keys=False, default_flow_style=False, allow_unicode=True)


# --- seed ---------------------------------------------------------------------------------------


def load_seed_file(path: StatePath) -> Mapping[str, Any]:
    """Read a seed YAML file (see seed_lab for its shape)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabAdminError(f"cannot read seed file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LabAdminError(f"seed file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, Mapping):
        raise LabAdminError(f"seed file {path} must be a mapping with hosts, documents, services or failures")
    return data


def seed_lab(state_path: StatePath, seed: Mapping[str, Any]) -> None:
    """Merge a seed into the lab, all or nothing.

    Shape: `services: {name: {serviceName, realm, style?, host?, name?, certificate?}}` (certificate:
    base64 DER; omitted keeps an existing service's certificate or generates one; `generate` always
    generates), `documents: {path or URL: {service, status?}}`, `hosts: {host: {platform?,
    <Kind>: object or list}}` (listed kinds replace that kind on the host; new hosts are created;
    a `CertificateRawData` may be `{service: name}` to use that service's certificate), and
    `failures: [{host, cmdlet, identity?, times?, message?}]` (appended).
    """
    unknown = set(seed) - {"services", "documents", "hosts", "failures"}
    if unknown:
        raise LabAdminError(f"seed: unknown section(s) {', '.join(sorted(map(str, unknown)))}")
    with LabStore(state_path).edit() as state:
        merged = copy.deepcopy(state)
        _seed_services(merged, _mapping(seed.get("services"), "services"))
        _seed_documents(merged, _mapping(seed.get("documents"), "documents"))
        _seed_hosts(merged, _mapping(seed.get("hosts"), "hosts"))
        for entry in _sequence(seed.get("failures"), "failures"):
            _append_failure(merged, _mapping(entry, "failures[]"))
        state.clear()
        state.update(merged)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LabAdminError(f"seed: {where} must be a mapping")
    return value


def _sequence(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise LabAdminError(f"seed: {where} must be a list")
    return value


def _seed_services(state: dict[str, Any], services: Mapping[str, Any]) -> None:
    current = state.setdefault("services", {})
    for name, raw in services.items():
        spec = dict(_mapping(raw, f"services.{name}"))
        for required in ("serviceName", "realm"):
            if not isinstance(spec.get(required), str) or not spec[required]:
                raise LabAdminError(f"seed: services.{name}.{required} is required")
        style = str(spec.get("style", "exchange")).lower()
        if style not in STYLES:
            raise LabAdminError(f"seed: services.{name}.style must be one of {', '.join(STYLES)}")
        host = str(spec.get("host") or name)
        certificate = spec.get("certificate")
        if certificate in (None, "") and name in current and current[name].get("certificate"):
            certificate = current[name]["certificate"]
        elif certificate in (None, "", "generate"):
            certificate = certs.b64(certs.make_certificate(host))
        else:
            try:
                certificate = certs.b64(certs.to_der(certs.from_b64(str(certificate))))
            except ValueError:
                raise LabAdminError(f"seed: services.{name}.certificate is not a base64 certificate") from None
        current[name] = {
            "serviceName": spec["serviceName"],
            "realm": spec["realm"],
            "host": host,
            "style": style,
            "name": spec.get("name") or name,
            "certificate": certificate,
        }


def _document_path(path_or_url: str) -> str:
    path = urlsplit(path_or_url).path if "://" in path_or_url else path_or_url
    return path if path.startswith("/") else "/" + path


def _seed_documents(state: dict[str, Any], documents: Mapping[str, Any]) -> None:
    current = state.setdefault("documents", {})
    for where, raw in documents.items():
        spec = _mapping(raw, f"documents.{where}")
        service = spec.get("service")
        if service not in state.get("services", {}):
            raise LabAdminError(f"seed: documents.{where}.service must name a service ({service!r} does not)")
        status = str(spec.get("status", "ok"))
        if status not in STATUSES:
            raise LabAdminError(f"seed: documents.{where}.status must be one of {', '.join(STATUSES)}")
        current[_document_path(str(where))] = {"service": service, "status": status}


def _resolve_certificates(state: Mapping[str, Any], plat: Platform, obj: dict[str, Any], where: str) -> None:
    """Replace `{service: name}` certificate references by that service's certificate."""
    for name in plat.certificate_fields:
        value = obj.get(name)
        if isinstance(value, Mapping):
            svc = state.get("services", {}).get(value.get("service"))
            if svc is None:
                raise LabAdminError(f"seed: {where}.{name} names no known service")
            obj[name] = svc["certificate"]


def _seed_hosts(state: dict[str, Any], hosts: Mapping[str, Any]) -> None:
    current = state.setdefault("hosts", {})
    for name, raw in hosts.items():
        spec = _mapping(raw, f"hosts.{name}")
        host = find_host(state, str(name)) or str(name)
        record = current.get(host)
        try:
            plat = platform(str(spec.get("platform") or (record or {}).get("platform") or "skype"))
        except ReconcilerError as exc:
            raise LabAdminError(f"seed: hosts.{name}.platform: {exc}") from None
        if record is None:
            record = {"platform": plat.name, "roundTrips": 0, "calls": {}, "objects": plat.empty_objects()}
            current[host] = record
        record["platform"] = plat.name
        objects = record.setdefault("objects", plat.empty_objects())
        for raw_kind, value in spec.items():
            if raw_kind == "platform":
                continue
            kind = plat.kind_name(str(raw_kind))
            if kind is None:
                raise LabAdminError(f"seed: hosts.{name}: unknown kind {raw_kind!r} (known: {', '.join(plat.kinds)})")
            objects[kind] = _seed_kind(state, plat, kind, value, f"hosts.{name}.{kind}")


def _seed_kind(state: Mapping[str, Any], plat: Platform, kind: str, value: Any, where: str) -> Any:
    items = [value] if plat.kinds[kind] else _sequence(value, where)
    result: list[dict[str, Any]] = []
    for raw in items:
        obj = dict(_mapping(raw, where))
        _resolve_certificates(state, plat, obj, where)
        try:
            normal = plat.normalize(kind, obj)
        except ValueError as exc:
            raise LabAdminError(f"seed: {where}: {exc}") from None
        if find(result, str(normal["Identity"])) is not None:
            raise LabAdminError(f"seed: {where}: Identity {normal['Identity']!r} is listed twice")
        result.append(normal)
    return result[0] if plat.kinds[kind] else result


# --- documents, objects, failures, stats --------------------------------------------------------


def set_document_status(state_path: StatePath, path_or_url: str, status: str) -> str:
    """Make a metadata document answer differently (ok/invalid/notfound/unreachable); returns its path."""
    if status not in STATUSES:
        raise LabAdminError(f"status must be one of {', '.join(STATUSES)}")
    path = _document_path(path_or_url)
    with LabStore(state_path).edit() as state:
        found = find_document(state, path)
        if found is None:
            known = ", ".join(sorted(state.get("documents", {}))) or "none"
            raise LabAdminError(f"the lab serves no document at {path} (documents: {known})")
        state["documents"][found[0]]["status"] = status
        return found[0]


def parse_value(text: str) -> Any:
    """`true`/`false`/`null` (any case, or PowerShell's `$true`...) as JSON values; anything else a string."""
    words: dict[str, Any] = {"true": True, "false": False, "null": None}
    return words.get(text.lower().removeprefix("$"), text)


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`Prop=Value` arguments as a mapping (values through parse_value)."""
    result: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise LabAdminError(f"expected Property=Value, got {item!r}")
        result[name] = parse_value(value)
    return result


def _locate(state: dict[str, Any], host: str, kind: str) -> tuple[Platform, str, dict[str, Any]]:
    name = _host_name(state, host)
    record = state["hosts"][name]
    plat = platform(str(record.get("platform", "skype")))
    canonical = plat.kind_name(kind)
    if canonical is None:
        raise LabAdminError(f"unknown kind {kind!r} (known: {', '.join(plat.kinds)})")
    return plat, canonical, record.setdefault("objects", plat.empty_objects())


def set_object(
    state_path: StatePath, host: str, kind: str, identity: str, assignments: Mapping[str, Any]
) -> dict[str, Any]:
    """Change properties of a live object behind the tool's back (drift); returns the new object."""
    if any(name.lower() == "identity" for name in assignments):
        raise LabAdminError("Identity cannot be changed; remove the object and seed a new one")
    with LabStore(state_path).edit() as state:
        plat, canonical, objects = _locate(state, host, kind)
        if plat.kinds[canonical]:
            if identity.lower() != "global":
                raise LabAdminError(f"{canonical} has one instance, Global")
            current = objects[canonical]
        else:
            index = find(objects.get(canonical, []), identity)
            if index is None:
                raise LabAdminError(f"{host} has no {canonical} {identity!r}")
            current = objects[canonical][index]
        try:
            updated = plat.normalize(canonical, {**current, **assignments})
        except ValueError as exc:
            raise LabAdminError(str(exc)) from None
        current.clear()
        current.update(updated)
        return copy.deepcopy(updated)


def remove_object(state_path: StatePath, host: str, kind: str, identity: str) -> None:
    """Delete a live object behind the tool's back."""
    with LabStore(state_path).edit() as state:
        plat, canonical, objects = _locate(state, host, kind)
        if plat.kinds[canonical]:
            raise LabAdminError(f"{canonical} always exists and cannot be removed; use `lab set` to change it")
        index = find(objects.get(canonical, []), identity)
        if index is None:
            raise LabAdminError(f"{host} has no {canonical} {identity!r}")
        del objects[canonical][index]


def _append_failure(state: dict[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    host = _host_name(state, str(spec.get("host", "")))
    plat = platform(str(state["hosts"][host].get("platform", "skype")))
    cmdlet = plat.cmdlet_name(str(spec.get("cmdlet", "")))
    if cmdlet is None:
        raise LabAdminError(f"unknown cmdlet {spec.get('cmdlet')!r} (known: {', '.join(plat.cmdlets)})")
    times = spec.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise LabAdminError("times must be a whole number >= 1")
    identity, message = spec.get("identity"), spec.get("message")
    entry = {
        "host": host,
        "cmdlet": cmdlet,
        "identity": None if identity in (None, "") else str(identity),
        "times": times,
        "message": None if message in (None, "") else str(message),
    }
    state.setdefault("failures", []).append(entry)
    return entry


def add_failure(
    state_path: StatePath,
    host: str,
    cmdlet: str,
    *,
    identity: str | None = None,
    times: int = 1,
    message: str | None = None,
) -> dict[str, Any]:
    """Make the next `times` matching commands fail with `message` (identity None: any identity)."""
    with LabStore(state_path).edit() as state:
        spec = {"host": host, "cmdlet": cmdlet, "identity": identity, "times": times, "message": message}
        return _append_failure(state, spec)


def lab_stats(state_path: StatePath, host: str | None = None, *, reset: bool = False) -> dict[str, Any]:
    """Round trips and calls per host (before any reset), optionally setting them back to zero."""
    store = LabStore(state_path)
    if not reset:
        return _stats(store.read(), host)
    with store.edit() as state:
        result = _stats(state, host)
        for name in result:
            state["hosts"][name]["roundTrips"] = 0
            state["hosts"][name]["calls"] = {}
        return result


def _stats(state: Mapping[str, Any], host: str | None) -> dict[str, Any]:
    names = [_host_name(state, host)] if host else sorted(state.get("hosts", {}))
    return {
        name: {
            "roundTrips": state["hosts"][name].get("roundTrips", 0),
            "calls": dict(sorted(state["hosts"][name].get("calls", {}).items())),
        }
        for name in names
    }
