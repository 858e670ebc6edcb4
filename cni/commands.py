"""The CNI commands, each one agent call (or a few) and a translation of the answer.

The agent owns all state; these functions only turn a runtime's request into the
endpoint API's terms and the answer back into CNI's. Each returns the document to
print on stdout (``None`` for commands that print nothing) or raises ``CNIError``.
"""

from __future__ import annotations

import os

from ..client.agent import endpoint_path
from ..client.errors import AgentError, AgentUnreachable
from . import args, ids, result, version
from .errors import (
    CHECK_FAILED,
    INTERNAL,
    INVALID_ENV,
    INVALID_NETWORK_CONFIG,
    PLUGIN_NOT_AVAILABLE,
    PLUGIN_NOT_AVAILABLE_LIMITED,
    CNIError,
    calling,
    from_agent,
)

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

    from ..client.agent import AgentClient
    from .invocation import Environment, NetConf
    from .log import Log

    Doc = dict[str, Any]

AGENT_TIMEOUT = 120.0  # creating an endpoint means netlink and map work in the agent
STATUS_TIMEOUT = 10.0


def endpoint_request(env: Environment, conf: NetConf) -> Doc:
    """The ``PUT /v1/endpoint/{id}`` body for this attachment."""
    cni_args = args.parse_cni_args(env.args)
    return {
        "netns": env.netns,
        "interface-name": env.ifname,
        "container-id": env.container_id,
        "container-name": args.container_name(cni_args),
        # The network each attachment belongs to, so GC can be scoped to one network.
        "network": conf.name,
        "labels": args.endpoint_labels(cni_args, conf.args),
        "addressing": {"ipv4": None, "ipv6": None},
    }


def add(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> Doc:
    """Create (or find again) the endpoint and report it in the config's version."""
    body = endpoint_request(env, conf)
    if not os.path.exists(env.netns):
        raise CNIError(INVALID_ENV, f"CNI_NETNS {env.netns} does not exist")
    ep_id = ids.endpoint_id(env.container_id, env.ifname)
    log.debug("creating endpoint", endpoint=ep_id, labels=body["labels"])
    path = endpoint_path(ep_id)
    with calling(f"create endpoint {ep_id}"):
        resp = client.request("PUT", path, body)
        ep = client.answer(resp, "PUT", path, ok=(200, 201))
    if not isinstance(ep, dict):
        raise CNIError(INTERNAL, f"create endpoint {ep_id}: the agent's answer is not an "
                       "endpoint", f"agent answered HTTP {resp.status}")
    ours = result.from_endpoint(ep, env.ifname, env.netns, conf.dns)
    if not ours["ips"]:
        # A result without an address breaks every runtime; undo rather than report it.
        try:
            client.delete_endpoint(ep_id)
        except AgentError:
            pass  # the missing address is the error to report
        raise CNIError(INTERNAL, f"the agent gave endpoint {ep_id} no address")
    if conf.prev_result:
        ours = result.merge(result.parse(conf.prev_result, conf.cni_version), ours)
    log.info("endpoint ready", endpoint=ep_id, created=resp.status == 201,
             addresses=[ip["address"] for ip in ours["ips"]], identity=ep.get("identity"))
    return result.render(ours, conf.cni_version)


def delete(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> None:
    """Remove the endpoint; already gone (or never made) counts as success."""
    ep_id = ids.endpoint_id(env.container_id, env.ifname)
    with calling(f"delete endpoint {ep_id}"):
        deleted = client.delete_endpoint(ep_id)
    log.info("endpoint deleted" if deleted else "endpoint already gone", endpoint=ep_id)


def check(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> None:
    """Compare prevResult, the agent's endpoint and the netns; any drift is code 101."""
    from . import check as verdict
    from .netns_path import require_netns, same_netns

    if conf.prev_result is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "CHECK needs the prevResult of the ADD")
    runtime_ns = require_netns(env.netns)
    ep_id = ids.endpoint_id(env.container_id, env.ifname)
    with calling(f"get endpoint {ep_id}"):
        ep = _object(client.get_endpoint(ep_id), f"get endpoint {ep_id}")
    action = f"inspect the interface of endpoint {ep_id}"
    with calling(action):
        seen = _object(client.get_interface(ep_id), action)
    prev = result.parse(conf.prev_result, conf.cni_version)
    problems = verdict.compare(prev, ep, verdict.observed_from_agent(seen),
                               env.ifname, env.netns,
                               result.expresses_link_routes(conf.cni_version))
    agent_ns = seen.get("netns")
    if isinstance(agent_ns, str) and not same_netns(runtime_ns, agent_ns):
        problems.insert(0, f"the agent attached endpoint {ep_id} to {agent_ns}, "
                           f"not to CNI_NETNS {env.netns}")
    if problems:
        # msg is the first problem; details only add what msg does not already say.
        rest = problems[1:]
        raise CNIError(CHECK_FAILED, problems[0],
                       f"also: {'; '.join(rest)}" if rest else f"endpoint {ep_id}")
    log.debug("check passed", endpoint=ep_id)


def gc(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> None:
    """Delete this network's endpoints whose attachment the runtime no longer lists.

    Only endpoints ADDed for this network (``network`` == the config's ``name``) are
    candidates: the valid-attachments list speaks for one network, and another network
    using this plugin and agent has its own. Endpoints made before the network was
    recorded (no ``network``) are left to DEL. Keeps going past a failed delete so one
    stuck endpoint does not shield the rest, then reports the first failure's code.
    """
    if conf.valid_attachments is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "GC needs 'cni.dev/valid-attachments'",
                       "refusing to guess: without the list every endpoint would go")
    valid = set(conf.valid_attachments)
    with calling("list endpoints"):
        listed = client.list_endpoints()
    if not isinstance(listed, list):
        raise CNIError(INTERNAL, "list endpoints: the agent's answer is not a list")
    failures: list[CNIError] = []
    removed = []
    other_networks = 0
    for ep in listed:
        if not isinstance(ep, dict) or not ids.is_cni_endpoint(ep):
            continue
        if ep.get("network") != conf.name:
            other_networks += 1
            continue
        if (ep["container-id"], ep["interface-name"]) in valid:
            continue
        try:
            client.delete_endpoint(ep["id"])
        except AgentError as exc:
            failures.append(from_agent(exc, f"delete endpoint {ep['id']}"))
        else:
            removed.append(ep["id"])
    log.info("garbage collected", removed=removed, kept=len(valid), failed=len(failures),
             not_this_network=other_networks)
    if failures:
        first = failures[0]
        raise CNIError(first.code, f"GC could not remove {len(failures)} endpoint(s): "
                       f"{first.msg}", "; ".join(f.msg for f in failures))


def status(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> None:
    """0 when the agent answers and is not failing; 50 (no ADDs possible) or 51.

    51 is reserved for a failing datapath, since only then may running containers
    lose connectivity; an unreachable agent leaves the loaded programs working.
    """
    try:
        resp = client.health(timeout=min(client.timeout, STATUS_TIMEOUT))
    except AgentUnreachable as exc:
        unreachable = from_agent(exc, "health")
        raise CNIError(PLUGIN_NOT_AVAILABLE, unreachable.msg, unreachable.details) from None
    except AgentError as exc:
        raise from_agent(exc, "health") from None
    doc = _document(resp.content)
    if resp.status == 200 and doc.get("status") in ("ok", "degraded"):
        return
    subsystems = doc.get("subsystems") if isinstance(doc.get("subsystems"), dict) else {}
    failing = sorted(name for name, s in subsystems.items()
                     if isinstance(s, dict) and s.get("status") == "failure")
    code = (PLUGIN_NOT_AVAILABLE_LIMITED if any(n.startswith("datapath") for n in failing)
            else PLUGIN_NOT_AVAILABLE)
    details = "; ".join(f"{n}: {subsystems[n].get('message', '')}" for n in failing)
    raise CNIError(code, f"cilium-py agent is not healthy (failing: {failing or 'unknown'})",
                   details or f"healthz answered HTTP {resp.status}")


def _object(doc: Any, action: str) -> Doc:
    if not isinstance(doc, dict):
        raise CNIError(INTERNAL, f"{action}: the agent's answer is not an object")
    return doc


def _document(raw: bytes) -> Doc:
    """A health answer's JSON object; anything else (a proxy's page) reads as empty."""
    from ..client import codec

    try:
        doc = codec.loads(raw) if raw.strip() else None
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


def run(env: Environment, conf: NetConf, client: AgentClient, log: Log) -> Doc | None:
    version.require_command_allowed(env.command, conf.cni_version)
    return HANDLERS[env.command](env, conf, client, log)
