"""Operations on the lab from outside the tool: create it, inspect it, and break it on purpose.

Tests and the demo use these to set up a situation (drift made behind the tool's back, a metadata
URL that stops answering, a cmdlet that fails once) and then check what the tool does about it.
The CLI (`reconcile lab ...`, reconciler.lab.cli) is a thin layer over these functions.

The lab's Office 365 tenants (Microsoft Graph, reconciler.lab.graph) have their own operations, each
taking `tenant` (default: the lab's tenant, or the only one):

- graph_show: service principals (keyCredentials as thumbprint + dates, never base64), clients (roles,
  whether a secret is set, certificate thumbprint; never the secret's hash), faults, tokens, round trips.
- graph_set: `accountEnabled` and `servicePrincipalNames` of a service principal (drift).
- graph_add_key / graph_remove_key: add a certificate file's keyCredential, remove one by thumbprint
  (or keyId), as someone in the portal would behind the tool's back.
- add_graph_fault: the next N Graph requests (optionally only one method, a path substring, inner
  requests of a batch) answer 429 or 503 with Retry-After.
- expire_graph_tokens: every access token issued so far expires now.
- register_graph_client: add or change a client app (secret stored as SHA-256; certificate for
  assertions; roles).
- graph_stats: Graph round trips per tenant (optionally reset).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from reconciler.errors import LabAdminError, ReconcilerError
from reconciler.lab import certs, graph
from reconciler.lab.emulator import Platform, find, find_host, platform
from reconciler.lab.estate import STYLES, default_estate
from reconciler.lab.server import find_document
from reconciler.lab.state import STATUSES, LabStore

StatePath = str | Path
HOST_LINKS = ("service", "exchange", "skype")
"""Host record keys naming one thing: its own service, the linked Exchange host, the linked Skype pool."""
HOST_LISTS = ("servers", "mailboxes")
"""Host record keys listing names: an Exchange host's servers (iisreset) and mailboxes (SIP URIs)."""


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
        hosts[name] = {"platform": plat.name, "roundTrips": record.get("roundTrips", 0)}
        for key in (*HOST_LINKS, *HOST_LISTS, "iisResets"):
            if record.get(key) is not None:
                hosts[name][key] = copy.deepcopy(record[key])
        hosts[name]["objects"] = objects
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
    generates), `documents: {path or URL: {service, status?}}`, `hosts: {host: {platform?, service?,
    exchange?, skype?, servers?, mailboxes?, <Kind>: object or list}}` (listed kinds replace that kind on
    the host; new hosts are created; a `CertificateRawData` may be `{service: name}` to use that
    service's certificate; `service` names a service, `exchange`/`skype` a linked host (null: none),
    `servers`/`mailboxes` are lists of names), and
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
            if raw_kind in HOST_LINKS or raw_kind in HOST_LISTS:
                record[raw_kind] = _seed_host_value(state, str(raw_kind), value, f"hosts.{name}.{raw_kind}")
                continue
            kind = plat.kind_name(str(raw_kind))
            if kind is None:
                raise LabAdminError(f"seed: hosts.{name}: unknown kind {raw_kind!r} (known: {', '.join(plat.kinds)})")
            objects[kind] = _seed_kind(state, plat, kind, value, f"hosts.{name}.{kind}")


def _seed_host_value(state: Mapping[str, Any], key: str, value: Any, where: str) -> Any:
    """A host record link or list from a seed, checked (a link may name a host the same seed adds)."""
    if key in HOST_LISTS:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise LabAdminError(f"seed: {where} must be a list of names")
        return list(value)
    if value is None and key != "service":
        return None
    if not isinstance(value, str) or not value:
        raise LabAdminError(f"seed: {where} must be a name")
    if key == "service" and value not in state.get("services", {}):
        raise LabAdminError(f"seed: {where} must name a service ({value!r} does not)")
    return value


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
            current = objects[canonical]
            if identity.lower() not in ("global", str(current.get("Identity", "")).lower()):
                raise LabAdminError(f"{canonical} has one instance, Global")
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


# --- Graph (Office 365 tenants) -----------------------------------------------------------------


def _tenant_id(state: Mapping[str, Any], tenant: str | None) -> str:
    """The stored id of `tenant`, or of the lab's tenant (or the only one) when None."""
    tenants: Mapping[str, Any] = state.get("tenants") or {}
    if tenant:
        found = graph.find_tenant(state, tenant)
        if found is None:
            raise LabAdminError(f"the lab has no tenant {tenant!r} (tenants: {', '.join(sorted(tenants)) or 'none'})")
        return found
    if state.get("tenantId") in tenants:
        return str(state["tenantId"])
    if len(tenants) == 1:
        return next(iter(tenants))
    if not tenants:
        raise LabAdminError("the lab has no Office 365 tenant (recreate it with `reconcile lab init --force`)")
    raise LabAdminError(f"name a tenant with --tenant (tenants: {', '.join(sorted(tenants))})")


def _service_principal(record: Mapping[str, Any], app_id: str) -> dict[str, Any]:
    sp = graph.find_service_principal(record, app_id)
    if sp is None:
        known = ", ".join(str(s.get("appId")) for s in record.get("servicePrincipals", [])) or "none"
        raise LabAdminError(f"the tenant has no service principal with appId {app_id!r} (appIds: {known})")
    return sp


def _show_key(credential: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "keyId": credential.get("keyId"),
        "thumbprint": graph.key_thumbprint(credential) or "(not a certificate)",
        "displayName": credential.get("displayName"),
        "startDateTime": credential.get("startDateTime"),
        "endDateTime": credential.get("endDateTime"),
        "type": credential.get("type"),
        "usage": credential.get("usage"),
    }


def _show_service_principal(sp: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "appId": sp.get("appId"),
        "id": sp.get("id"),
        "displayName": sp.get("displayName"),
        "accountEnabled": sp.get("accountEnabled"),
        "servicePrincipalNames": list(sp.get("servicePrincipalNames", [])),
        "keyCredentials": [_show_key(k) for k in sp.get("keyCredentials", [])],
    }


def _show_client(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "displayName": entry.get("displayName"),
        "roles": list(entry.get("roles", [])),
        "secret": bool(entry.get("secretSha256")),
        "certificateThumbprint": _thumbprint(entry.get("certificate")),
    }


def graph_show(state_path: StatePath, tenant: str | None = None) -> dict[str, Any]:
    """Each tenant's (or one tenant's) service principals, clients, faults, tokens and round trips."""
    state = LabStore(state_path).read()
    tenants: Mapping[str, Any] = state.get("tenants") or {}
    names = [_tenant_id(state, tenant)] if tenant else sorted(tenants)
    now = time.time()
    view: dict[str, Any] = {}
    for name in names:
        record = tenants[name]
        tokens = record.get("tokens", {}).values()
        live = sum(1 for t in tokens if float(t.get("expires", 0)) > now)
        view[name] = {
            "servicePrincipals": [_show_service_principal(sp) for sp in record.get("servicePrincipals", [])],
            "clients": {cid: _show_client(c) for cid, c in record.get("clients", {}).items()},
            "faults": copy.deepcopy(record.get("faults", [])),
            "tokens": {"valid": live, "expired": len(tokens) - live},
            "roundTrips": record.get("roundTrips", 0),
        }
    return view


def parse_graph_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`accountEnabled=true|false` and `servicePrincipalNames=a,b` (a comma list; empty: none)."""
    result: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        prop = {"accountenabled": "accountEnabled", "serviceprincipalnames": "servicePrincipalNames"}.get(name.lower())
        if not eq or prop is None:
            raise LabAdminError(f"expected accountEnabled=true|false or servicePrincipalNames=a,b; got {item!r}")
        if prop == "accountEnabled":
            parsed = parse_value(value)
            if not isinstance(parsed, bool):
                raise LabAdminError(f"accountEnabled must be true or false, not {value!r}")
            result[prop] = parsed
        else:
            result[prop] = [n.strip() for n in value.split(",") if n.strip()]
    return result


def graph_set(state_path: StatePath, app_id: str, assignments: Mapping[str, Any],
              tenant: str | None = None) -> dict[str, Any]:
    """Change a service principal's accountEnabled / servicePrincipalNames behind the tool's back."""
    for name, value in assignments.items():
        if name == "accountEnabled" and not isinstance(value, bool):
            raise LabAdminError("accountEnabled must be true or false")
        if name == "servicePrincipalNames" and not (
                isinstance(value, list) and all(isinstance(n, str) and n for n in value)):
            raise LabAdminError("servicePrincipalNames must be a list of names")
        if name not in ("accountEnabled", "servicePrincipalNames"):
            raise LabAdminError(f"only accountEnabled and servicePrincipalNames can be set, not {name!r}")
    with LabStore(state_path).edit() as state:
        sp = _service_principal(state["tenants"][_tenant_id(state, tenant)], app_id)
        sp.update(copy.deepcopy(dict(assignments)))
        return _show_service_principal(sp)


def _read_certificate(path: StatePath) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LabAdminError(f"cannot read certificate {path}: {exc.strerror}") from None
    try:
        return certs.to_der(data)
    except ValueError:
        pass
    try:
        return certs.to_der(certs.from_b64(data.decode("ascii")))  # a .cer exported as bare base64
    except (ValueError, UnicodeDecodeError):
        raise LabAdminError(f"{path} is not an X.509 certificate (DER, PEM or base64)") from None


def graph_add_key(state_path: StatePath, app_id: str, certificate: StatePath | bytes,
                  tenant: str | None = None) -> dict[str, Any]:
    """Add a certificate (a file, or DER/PEM bytes) as a keyCredential, dates from its validity."""
    if isinstance(certificate, bytes):
        try:
            der = certs.to_der(certificate)
        except ValueError:
            raise LabAdminError("not an X.509 certificate (DER or PEM)") from None
    else:
        der = _read_certificate(certificate)
    with LabStore(state_path).edit() as state:
        sp = _service_principal(state["tenants"][_tenant_id(state, tenant)], app_id)
        thumbprint = certs.thumbprint(der)
        if any(graph.key_thumbprint(k) == thumbprint for k in sp.get("keyCredentials", [])):
            raise LabAdminError(f"{app_id} already has the key {thumbprint}")
        credential = graph.key_credential(der)
        sp.setdefault("keyCredentials", []).append(credential)
        return _show_key(credential)


def graph_remove_key(state_path: StatePath, app_id: str, thumbprint: str, tenant: str | None = None) -> int:
    """Remove the keyCredentials whose certificate has this SHA-1 thumbprint (or this keyId); returns how many."""
    wanted = "".join(ch for ch in thumbprint if ch not in ": ").upper()
    with LabStore(state_path).edit() as state:
        sp = _service_principal(state["tenants"][_tenant_id(state, tenant)], app_id)
        keys = sp.get("keyCredentials", [])
        kept = [k for k in keys
                if graph.key_thumbprint(k) != wanted and str(k.get("keyId", "")).upper() != wanted]
        if len(kept) == len(keys):
            raise LabAdminError(f"{app_id} has no key with thumbprint or keyId {thumbprint!r}")
        sp["keyCredentials"] = kept
        return len(keys) - len(kept)


def add_graph_fault(
    state_path: StatePath,
    *,
    status: int = 429,
    retry_after: int | None = 2,
    times: int = 1,
    method: str | None = None,
    path: str | None = None,
    inner: bool = False,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Make the next `times` matching Graph requests answer `status` (429 or 503) with Retry-After."""
    if status not in graph.FAULT_STATUSES:
        raise LabAdminError(f"status must be one of {', '.join(map(str, graph.FAULT_STATUSES))}")
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise LabAdminError("times must be a whole number >= 1")
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int)
                                    or retry_after < 0):
        raise LabAdminError("retry-after must be a whole number of seconds >= 0")
    if method is not None and method.upper() not in graph.FAULT_METHODS:
        raise LabAdminError(f"method must be one of {', '.join(graph.FAULT_METHODS)}")
    entry = {
        "status": status,
        "retryAfter": retry_after,
        "times": times,
        "method": method.upper() if method else None,
        "path": path or None,
        "inner": bool(inner),
    }
    with LabStore(state_path).edit() as state:
        state["tenants"][_tenant_id(state, tenant)].setdefault("faults", []).append(entry)
    return dict(entry)


def expire_graph_tokens(state_path: StatePath, tenant: str | None = None) -> int:
    """Expire every access token issued so far (in one tenant, or all); returns how many were valid."""
    now = time.time()
    expired = 0
    with LabStore(state_path).edit() as state:
        names = [_tenant_id(state, tenant)] if tenant else list(state.get("tenants") or {})
        for name in names:
            for token in state["tenants"][name].get("tokens", {}).values():
                if float(token.get("expires", 0)) > now:
                    expired += 1
                token["expires"] = min(float(token.get("expires", 0)), int(now) - 1)
    return expired


def register_graph_client(
    state_path: StatePath,
    client_id: str,
    *,
    secret: str | None = None,
    certificate: StatePath | bytes | None = None,
    roles: Sequence[str] | None = None,
    display_name: str | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Add a client app or change one: a secret (kept as SHA-256) and/or a certificate; roles.

    A new client gets Application.ReadWrite.All unless `roles` says otherwise; an existing one keeps
    its roles, display name and the credential not given.
    """
    if secret is None and certificate is None and roles is None and display_name is None:
        raise LabAdminError("give a secret, a certificate, roles or a display name")
    if secret is not None and not secret:
        raise LabAdminError("the client secret is empty")
    unknown = sorted(set(roles or []) - set(graph.ROLES))
    if unknown:
        raise LabAdminError(f"unknown role(s) {', '.join(unknown)} (known: {', '.join(graph.ROLES)})")
    der: bytes | None = None
    if isinstance(certificate, bytes):
        try:
            der = certs.to_der(certificate)
        except ValueError:
            raise LabAdminError("not an X.509 certificate (DER or PEM)") from None
    elif certificate is not None:
        der = _read_certificate(certificate)
    with LabStore(state_path).edit() as state:
        record = state["tenants"][_tenant_id(state, tenant)]
        clients = record.setdefault("clients", {})
        key = next((c for c in clients if c.lower() == client_id.lower()), client_id)
        if key not in clients and secret is None and der is None:
            raise LabAdminError(f"a new client needs a secret or a certificate ({client_id} is not registered)")
        entry = clients.setdefault(key, graph.client(display_name or key, [graph.READ_WRITE_ALL]))
        if secret is not None:
            entry["secretSha256"] = graph.sha256_hex(secret)
        if der is not None:
            entry["certificate"] = certs.b64(der)
        if roles is not None:
            entry["roles"] = list(dict.fromkeys(roles))
        if display_name:
            entry["displayName"] = display_name
        return {"clientId": key, **_show_client(entry)}


def graph_stats(state_path: StatePath, tenant: str | None = None, *, reset: bool = False) -> dict[str, Any]:
    """Graph round trips per tenant (before any reset), optionally setting them back to zero."""
    store = LabStore(state_path)
    if not reset:
        state = store.read()
        names = [_tenant_id(state, tenant)] if tenant else sorted(state.get("tenants") or {})
        return {name: {"roundTrips": state["tenants"][name].get("roundTrips", 0)} for name in names}
    with store.edit() as state:
        names = [_tenant_id(state, tenant)] if tenant else sorted(state.get("tenants") or {})
        result = {name: {"roundTrips": state["tenants"][name].get("roundTrips", 0)} for name in names}
        for name in names:
            state["tenants"][name]["roundTrips"] = 0
        return result
